"""The topics mmfeat owns, their keys and cleanup policies (docs/topics.md)."""

from __future__ import annotations

from mmfeat.kafka.client import TopicSpec, ensure_topics
from mmfeat.settings import Settings


def topic_specs(settings: Settings, partitions: int = 4) -> list[TopicSpec]:
    return [
        TopicSpec(settings.uploads_topic, partitions),
        TopicSpec(settings.features_topic, partitions, compacted=True),
        TopicSpec(settings.deferred_topic, partitions),
        TopicSpec(settings.dlq_topic, partitions),
        TopicSpec(settings.engagements_topic, partitions),
        TopicSpec(settings.profiles_topic, partitions, compacted=True),
        TopicSpec(settings.engagements_dlq_topic, partitions),
        TopicSpec(settings.unmatched_topic, partitions),
    ]


def create_topics(settings: Settings, partitions: int = 4) -> list[str]:
    return ensure_topics(settings, topic_specs(settings, partitions))
