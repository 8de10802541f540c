"""Read a topic from the beginning without joining a group: for `mmfeat tail`, the demo and tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from mmfeat.errors import KafkaIOError
from mmfeat.kafka.client import coords, decode_headers, high_watermark
from mmfeat.kafka.config import ClientErrors, connection_config
from mmfeat.settings import Settings


@dataclass(frozen=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]

    def json_value(self) -> Any:
        if self.value is None:
            return None
        try:
            return json.loads(self.value)
        except ValueError:
            return self.value.decode("utf-8", "replace")

    def as_json(self) -> dict[str, Any]:
        """The kcat -J shape: one object per record, value parsed when it is JSON."""
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset, "ts": self.timestamp_ms,
            "key": self.key, "value": self.json_value(), "headers": self.headers,
        }  # fmt: skip


def read_topic(
    settings: Settings, topic: str, *, max_records: int | None = None, timeout_s: float = 10.0, follow: bool = False
) -> Iterator[TopicRecord]:
    """Records of ``topic`` from the start. Stops at the end offsets seen when it began (unless
    ``follow``), after ``max_records``, or when nothing new arrives for ``timeout_s`` seconds."""
    errors = ClientErrors(f"reader of {topic}")
    consumer = Consumer(connection_config(settings, errors) | {"group.id": "mmfeat-reader", "enable.auto.commit": False})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=10)
        except KafkaException as e:
            raise errors.explain(e, consumer) from e
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise KafkaIOError(f"topic {topic} does not exist on {settings.kafka.bootstrap_servers}")
        parts = sorted(tmeta.partitions)
        ends = {p: high_watermark(consumer, topic, p) for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        n = 0
        last = time.monotonic()
        while (follow or todo) and (max_records is None or n < max_records):
            msg = consumer.poll(0.2)
            errors.raise_if_fatal()
            if msg is None:
                if time.monotonic() - last > timeout_s:
                    return
                continue
            if msg.error() is not None:
                continue
            last = time.monotonic()
            _, p, off = coords(msg)
            if off + 1 >= ends.get(p, 0):
                todo.discard(p)
            key = msg.key()
            n += 1
            yield TopicRecord(
                topic, p, off, msg.timestamp()[1], key.decode("utf-8", "replace") if key else None, msg.value(), decode_headers(msg)
            )
    finally:
        consumer.close()
