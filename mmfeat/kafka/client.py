"""Consumer, producer and admin construction, delivery tracking and error translation.

mmfeat/kafka/config.py maps our settings onto the clients' keys; only this package knows them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mmfeat.errors import KafkaAuthError, KafkaIOError
from mmfeat.kafka.config import ClientErrors, connection_config
from mmfeat.settings import Settings

Headers = list[tuple[str, str | bytes | None]]


def make_consumer(
    settings: Settings,
    group_id: str,
    *,
    on_stats: Callable[[str], None] | None = None,
    stats_interval_s: float = 5.0,
    errors: ClientErrors | None = None,
    **extra: Any,
) -> Consumer:
    """A consumer that never auto-commits: offsets are committed only after outputs are delivered.

    ``on_stats`` receives librdkafka's statistics JSON every ``stats_interval_s`` (consumer lag for metrics)."""
    conf = connection_config(settings, errors or ClientErrors(f"consumer {group_id}")) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 600_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }
    if on_stats is not None:
        conf |= {"statistics.interval.ms": int(stats_interval_s * 1000), "stats_cb": on_stats}
    return Consumer(conf | extra)


def make_producer(settings: Settings, *, errors: ClientErrors | None = None, **extra: Any) -> Producer:
    """An idempotent producer (acks=all): a retry cannot duplicate or reorder within a partition."""
    conf = connection_config(settings, errors or ClientErrors("producer")) | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 16 * 1024 * 1024,
    }
    return Producer(conf | extra)


def make_admin(settings: Settings, errors: ClientErrors | None = None) -> AdminClient:
    return AdminClient(connection_config(settings, errors or ClientErrors("admin")) | {"log_level": min(settings.kafka.kafka_log_level, 3)})


def min_insync(replicas: int) -> int:
    """A write is acknowledged by all but one replica (so one node may be down), and by one at least."""
    return max(1, replicas - 1)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 4
    compacted: bool = False

    def new_topic(self, replicas: int = 1) -> NewTopic:
        # a write is acknowledged (acks=all) by all in-sync replicas, and refused when fewer than all but one are
        config = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "max.message.bytes": "16777216",
            "min.insync.replicas": str(min_insync(replicas)),
        }
        return NewTopic(self.name, num_partitions=self.partitions, replication_factor=replicas, config=config)


def ensure_topics(settings: Settings, specs: Sequence[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    errors = ClientErrors("admin")
    admin = make_admin(settings, errors)
    try:
        cluster = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise errors.explain(e, admin) from e
    # one spec per name: a name twice in one CreateTopics request crashed the process (librdkafka, segfault)
    wanted: dict[str, TopicSpec] = {}
    for spec in specs:
        wanted.setdefault(spec.name, spec)
    missing = [spec for name, spec in wanted.items() if name not in cluster.topics]
    if not missing:
        return []
    replicas = settings.kafka.replication_factor or min(3, len(cluster.brokers))
    futures = admin.create_topics([s.new_topic(replicas) for s in missing], operation_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaIOError(f"cannot create topic {name}: {e.args[0].str()}") from e
    return created


def coords(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; always set on a record without an error."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def raise_on_error(msg: Message) -> None:
    """Translate a consumed error message into our exception; partition EOF is not an error."""
    err = msg.error()
    if err is None or err.code() == KafkaError._PARTITION_EOF:
        return
    raise KafkaIOError(f"consume failed on {msg.topic()}[{msg.partition()}]: {err.str()}")


@dataclass
class OutRecord:
    """One record to produce: topic, key (a DLQ record keeps its source's raw key bytes), value, headers."""

    topic: str
    key: str | bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    event_time_s: float | None = None  # when what it reports on happened (freshness metrics); not sent
    partition: int | None = None  # None: the producer's partitioner, by key


class DeliveryTracker:
    """Produces a batch and waits until every record is acknowledged or one failed."""

    def __init__(self, producer: Producer, errors: ClientErrors | None = None) -> None:
        self._producer = producer
        self._errors_cb = errors
        self._lock = threading.Lock()
        self._pending = 0
        self._errors: list[str] = []

    @classmethod
    def of(cls, settings: Settings) -> DeliveryTracker:
        """A tracker over a producer of its own, which stops on refused credentials instead of retrying."""
        errors = ClientErrors("producer")
        return cls(make_producer(settings, errors=errors), errors)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self._pending -= 1
            if err is not None:
                self._errors.append(f"{msg.topic()} key={msg.key()!r}: {err.str()}")

    def produce_all(self, records: Iterable[OutRecord], timeout_s: float) -> int:
        """Produce and flush; raise KafkaIOError unless every record was acknowledged in time."""
        n = 0
        for rec in records:
            with self._lock:
                self._pending += 1
            while True:
                try:
                    key = rec.key.encode() if isinstance(rec.key, str) else rec.key
                    if rec.partition is None:
                        self._producer.produce(rec.topic, key=key, value=rec.value, headers=rec.headers, on_delivery=self._on_delivery)
                    else:
                        self._producer.produce(
                            rec.topic, key=key, value=rec.value, headers=rec.headers, on_delivery=self._on_delivery, partition=rec.partition
                        )
                    break
                except BufferError:
                    self._producer.poll(0.1)  # local queue full: serve callbacks, then retry
            n += 1
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            if self._errors_cb is not None:
                self._errors_cb.raise_if_fatal()  # refused credentials: no retry can help
            with self._lock:
                pending, errors = self._pending, list(self._errors)
            if errors:
                self._errors.clear()
                raise KafkaIOError(f"delivery failed for {len(errors)} record(s), first: {errors[0]}")
            if pending == 0 and remaining == 0:
                return n
            if time.monotonic() >= deadline:
                raise KafkaIOError(f"{pending} record(s) not acknowledged within {timeout_s:.0f}s")

    def flush(self, timeout_s: float) -> int:
        """Wait for what is in flight (at shutdown); return how many records are still queued."""
        return int(self._producer.flush(timeout_s))


def commit_offsets(consumer: Consumer, messages: Sequence[Message], metadata: Callable[[str, int], str] | None = None) -> None:
    """Synchronously commit the offset after the last of ``messages`` in each partition.

    ``metadata(topic, partition)`` is stored with each offset (a backfill keeps its plan there)."""
    latest: dict[tuple[str, int], int] = {}
    for m in messages:
        topic, partition, offset = coords(m)
        latest[(topic, partition)] = max(latest.get((topic, partition), -1), offset)
    if not latest:
        return
    if metadata is None:
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in latest.items()]
    else:
        offsets = [TopicPartition(t, p, o + 1, metadata=metadata(t, p)) for (t, p), o in latest.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as e:
        code = e.args[0].code() if e.args else None
        if code in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            raise KafkaAuthError(f"commit refused: {e.args[0].str()}") from e
        raise KafkaIOError(f"commit failed: {e.args[0].str()}") from e


def decode_headers(msg: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    headers = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    for k, v in headers:
        out[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")
    return out


def committed_offsets(settings: Settings, group_id: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offsets ``group_id`` has committed on ``topic`` (0 where none), read without joining the group."""
    c = make_consumer(settings, group_id)
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in got}
    finally:
        c.close()


# A partition just created, or whose leader just moved (a node restarted), answers these for a moment: the client's
# metadata is behind the cluster's. Asked again after a refresh, the partition answers.
_LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART})


def high_watermark(consumer: Consumer, topic: str, partition: int, timeout_s: float = 10.0) -> int:
    """``partition``'s high watermark (the offset the next record will get), asking again while its leader moves."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)[1])
        except KafkaException as e:
            if e.args[0].code() not in _LEADER_MOVING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            consumer.list_topics(topic, timeout=timeout_s)  # a fresh look at who leads it


def partition_ends(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark (the offset the next record will get)."""
    c = make_consumer(settings, "mmfeat-probe")
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return {p: high_watermark(c, topic, p) for p in meta.partitions}
    finally:
        c.close()


def topic_size(settings: Settings, topic: str) -> int:
    """Records written to ``topic`` so far (the sum of its partitions' high watermarks)."""
    return sum(partition_ends(settings, topic).values())


def topic_partitions(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    errors = ClientErrors("admin")
    admin = make_admin(settings, errors)
    try:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException as e:
        raise errors.explain(e, admin) from e
    return len(meta.partitions) if meta is not None and meta.error is None and meta.partitions else 0
