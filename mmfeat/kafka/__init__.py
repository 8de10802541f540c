"""Our thin layer over confluent-kafka: the rest of mmfeat speaks in records, not librdkafka."""
