"""The crash count of mmfeat/kafka/consumer.py on the real broker: a rebalance between a batch's start and its commit
is not a crash. Counted as one, it would, with one real crash after it, give a good record up as a crash loop (the
profiles app's ingest lost engagements to the DLQ that way when workers joined and one was SIGKILLed)."""

from __future__ import annotations

import time

from confluent_kafka import Message, TopicPartition

from mmfeat.kafka.client import make_consumer, make_producer
from mmfeat.kafka.consumer import BatchConsumer, read_metadata
from mmfeat.settings import Settings


def started(s: Settings, group: str, topic: str) -> dict[int, int]:
    """Each partition's crash count as committed in ``group`` (the ``started`` of its commit metadata)."""
    c = make_consumer(s, group)
    try:
        got = c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
        return {tp.partition: int((read_metadata(tp.metadata) or {}).get("started", 0)) for tp in got}
    finally:
        c.close()


def first_batch(bc: BatchConsumer, timeout_s: float = 60) -> list[Message]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if batch := bc.poll(20, 0.5):
            return batch
    raise AssertionError("no records polled")


def test_a_rebalance_between_a_batch_start_and_its_commit_is_not_counted_as_a_crash(settings: Settings) -> None:
    topic, group = settings.topics.uploads_topic, f"{settings.worker.group_id}-crash-count"
    producer = make_producer(settings)
    for i in range(20):
        producer.produce(topic, key=f"k{i}".encode(), value=b"{}", partition=i % 2)
    producer.flush(10)

    a = BatchConsumer(settings, group, session_timeout_s=6)
    a.subscribe([topic])
    batch = first_batch(a)
    a.begin(batch)  # this process starts the batch: its partitions' heads are marked
    mine = {m.partition() for m in batch}
    assert {p: n for p, n in started(settings, group, topic).items() if p in mine} == dict.fromkeys(mine, 1)

    b = BatchConsumer(settings, group, session_timeout_s=6)
    b.subscribe([topic])
    deadline = time.monotonic() + 60
    got: list[Message] = []
    while not got and time.monotonic() < deadline:  # a's polls serve its revoke; b gets partitions in the new generation
        a.poll(1, 0.2)
        got = b.poll(20, 0.2)
    assert got, "the second consumer was never given a partition"
    b.begin(got)
    try:
        # nobody died: the head a marked was put back when a handed it over, and b counts no crash there
        assert {(t, p): h.crashes for (t, p), h in b.heads.items()} == {(topic, p): 0 for p in {m.partition() for m in got}}
        assert all(h.isolate_left == 0 for h in b.heads.values())
    finally:
        b.close()
        a.close()
    # and after both closed gracefully, no partition carries a count
    assert started(settings, group, topic) == {0: 0, 1: 0}
