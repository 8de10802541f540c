"""mmfeat: multimedia uploads to recommendation features with a multimodal LLM, on Kafka."""

__version__ = "0.1.0"
