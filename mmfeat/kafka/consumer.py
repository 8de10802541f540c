"""The consumer loop's Kafka half, written once for the caption worker and the backfill: poll a batch,
pause while a dependency is down, rewind a batch whose outputs were not delivered, commit after delivery,
and count crashes per partition head so that no record can crash-loop a partition.

Crash counting. Before a batch is processed, each of its partitions' committed offset (the head: the
first record not yet done) is re-committed with ``{"started": n}`` in its metadata, n counting the
processes that began at that head; the commit after delivery moves the head on with ``started: 0``, and so
does a graceful close. A process that finds ``started: k`` at a head knows k processes died there (a
segfault in a decoder, the OOM killer, SIGKILL): it handles the next records one at a time, and once k
reaches ``max_crashes`` it gives the record at the head up (``crash_loop``, to the DLQ) instead of
trying it again. The count lives in Kafka, so it holds whichever host the partition moves to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from mmfeat.errors import KafkaAuthError, KafkaIOError
from mmfeat.kafka.client import DeliveryTracker, OutRecord, commit_offsets, coords, make_consumer, raise_on_error
from mmfeat.kafka.config import ClientErrors
from mmfeat.settings import Settings

log = logging.getLogger("mmfeat.kafka")

Coords = tuple[str, int, int]  # topic, partition, offset
Metadata = Callable[[str, int], dict[str, Any]]  # extra commit metadata per (topic, partition): a backfill's plan


def read_metadata(metadata: str | None) -> dict[str, Any] | None:
    """Commit metadata as a dict (None when there is none or it is not ours)."""
    try:
        got = json.loads(metadata or "")
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


@dataclass
class Head:
    """A partition's first record not yet done, and how many processes began there and died."""

    offset: int
    crashes: int
    marked: bool = False  # this process's start is recorded in the committed metadata
    isolate_left: int = 0  # records still to handle one at a time after a crash


class BatchConsumer:
    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        on_stats: Callable[[str], None] | None = None,
        metadata: Metadata | None = None,
        max_crashes: int = 2,
        isolate: int = 16,
        session_timeout_s: float = 10.0,
    ) -> None:
        self.errors = ClientErrors(f"consumer {group_id}")
        self.consumer: Consumer = make_consumer(
            settings, group_id, on_stats=on_stats, stats_interval_s=settings.metrics.metrics_interval_s, errors=self.errors,
            **{"session.timeout.ms": int(session_timeout_s * 1000)},
        )  # fmt: skip
        self._metadata = metadata or (lambda topic, partition: {})
        self.max_crashes, self.isolate = max_crashes, isolate
        self.heads: dict[tuple[str, int], Head] = {}
        self.paused = False
        self.assigned = threading.Event()  # set once partitions are first handed to this consumer

    # ---- assignment ---------------------------------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.consumer.assign(partitions)
        self.assigned.set()

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.assigned.set()
        if self.paused:  # partitions handed over while a dependency is down stay paused too
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions handed on in a rebalance. A head this process marked is put back to the crashes counted before
        it, as on close: a rebalance between a batch's start and its commit is not a crash, and counted as one it
        would, with one real crash after it, give a good record up as a crash loop."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._unmark({k: h for k, h in self.heads.items() if k in revoked})
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions gone without a handover (the session expired): nothing can be committed for them any more."""
        for tp in partitions:  # its next owner reads the head (and the crash count) from Kafka
            self.heads.pop((tp.topic, tp.partition), None)

    # ---- polling ------------------------------------------------------------------------------

    def batch_limit(self, n: int) -> int:
        """How many records to take next: one at a time while any partition is isolating after a crash."""
        return 1 if any(h.isolate_left > 0 for h in self.heads.values()) else n

    def poll(self, n: int, timeout_s: float) -> list[Message]:
        """Up to ``n`` records; raises KafkaIOError on a fatal or authentication error, logs transient ones."""
        try:
            batch = self.consumer.consume(num_messages=self.batch_limit(n), timeout=timeout_s)
        except KafkaException as e:
            raise self.errors.explain(e, self.consumer) from e
        self.errors.raise_if_fatal()
        good = []
        for m in batch:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                raise_on_error(m)
            else:  # transient (broker restart, rebalance, partition EOF): librdkafka recovers
                self.errors(err)
        return good

    # ---- crash counting -----------------------------------------------------------------------

    def _commit(self, offsets: dict[tuple[str, int], int], started: int) -> None:
        tps = [
            TopicPartition(t, p, o, metadata=json.dumps(self._metadata(t, p) | {"started": started}, separators=(",", ":")))
            for (t, p), o in offsets.items()
        ]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            raise KafkaIOError(f"commit failed: {e.args[0].str() if e.args else e}") from e

    def begin(self, batch: Sequence[Message]) -> set[tuple[str, int, int]]:
        """Record that this process begins the batch; return the coordinates of records to give up on
        (``crash_loop``: at the head of a partition where ``max_crashes`` processes died)."""
        firsts: dict[tuple[str, int], int] = {}
        for m in batch:
            t, p, o = coords(m)
            firsts.setdefault((t, p), o)
        new = [tp for tp in firsts if tp not in self.heads]
        if new:
            got = self.consumer.committed([TopicPartition(t, p) for t, p in new], timeout=30)
            for tp in got:
                key = (tp.topic, tp.partition)
                crashes = int((read_metadata(tp.metadata) or {}).get("started", 0)) if tp.offset >= 0 else 0
                head = Head(tp.offset if tp.offset >= 0 else firsts[key], max(0, crashes))
                if head.crashes:
                    head.isolate_left = self.isolate
                    log.warning("%s[%d]: %d worker(s) died at offset %d: handling records one at a time", *key, head.crashes, head.offset)
                self.heads[key] = head
        unmarked = {k: self.heads[k] for k in firsts if not self.heads[k].marked}
        if unmarked:
            for head in unmarked.values():
                head.marked = True
            by_count: dict[int, dict[tuple[str, int], int]] = {}
            for k, head in unmarked.items():
                by_count.setdefault(head.crashes + 1, {})[k] = head.offset
            try:
                for started, offsets in by_count.items():
                    self._commit(offsets, started)
            except KafkaIOError:
                for head in unmarked.values():  # not recorded: the next try marks them again
                    head.marked = False
                raise
        return {(t, p, h.offset) for (t, p), h in self.heads.items() if h.crashes >= self.max_crashes and firsts.get((t, p)) == h.offset}

    def commit(self, batch: Sequence[Message]) -> None:
        """Commit after delivery: each partition's head moves past its last record of the batch."""
        commit_offsets(self.consumer, batch, lambda t, p: json.dumps(self._metadata(t, p) | {"started": 0}, separators=(",", ":")))
        last: dict[tuple[str, int], int] = {}
        for m in batch:
            t, p, o = coords(m)
            last[(t, p)] = max(last.get((t, p), -1), o)
        for key, o in last.items():
            old = self.heads.get(key)
            left = max(0, (old.isolate_left if old else 0) - sum(1 for m in batch if coords(m)[:2] == key))
            self.heads[key] = Head(o + 1, 0, isolate_left=left)

    # ---- one batch, end to end ----------------------------------------------------------------

    def deliver(
        self, batch: Sequence[Message], outputs: Callable[[set[Coords]], Sequence[OutRecord] | None], tracker: DeliveryTracker,
        timeout_s: float,
    ) -> Sequence[OutRecord] | None:  # fmt: skip
        """A batch to completion: its outputs (``outputs(give_up)``; None: stopped) produced and acknowledged, then
        the offsets committed. Returns the outputs, or None when they were not delivered and the batch was rewound
        (it comes again; also right after a crash, to take it one record at a time)."""
        try:
            give_up = self.begin(batch)
        except KafkaAuthError:
            raise
        except KafkaIOError as e:  # a rebalance under way: the batch comes again (here or at the partition's next owner)
            log.warning("%s: batch of %d record(s) rewound", e, len(batch))
            self.rewind(batch)
            time.sleep(0.2)
            return None
        if len(batch) > 1 and self.batch_limit(len(batch)) == 1:
            self.rewind(batch)
            return None
        out = outputs(give_up)
        if out is None:
            return None
        try:
            tracker.produce_all(out, timeout_s)
        except KafkaAuthError:
            raise
        except KafkaIOError as e:
            log.error("outputs of %d record(s) not delivered (%s): will retry them", len(batch), e)
            self.rewind(batch)
            time.sleep(1.0)
            return None
        try:
            self.commit(batch)
        except KafkaAuthError:
            raise
        except KafkaIOError as e:  # e.g. a rebalance: the records are redelivered, outputs rewrite the same values
            log.warning("%s", e)
        return out

    # ---- pause, rewind, close -----------------------------------------------------------------

    def pause_all(self) -> None:
        self.paused = True
        self.consumer.pause(self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(self.consumer.assignment())
        self.paused = False

    def hold(self, msg: Message) -> None:
        """A record that arrived while paused (from a partition assigned meanwhile): pause its partition, seek back."""
        tp = TopicPartition(*coords(msg))
        self.consumer.pause([tp])
        self.consumer.seek(tp)

    def rewind(self, batch: Sequence[Message]) -> None:
        """Seek each partition back to the first record of a batch whose outputs were not delivered."""
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            topic, partition, offset = coords(m)
            first.setdefault((topic, partition), offset)
        for (t, p), o in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, o))
            except KafkaException as e:  # partition revoked meanwhile: its new owner starts at the last commit
                log.warning("cannot rewind %s[%d] to %d: %s", t, p, o, e)

    def _unmark(self, heads: dict[tuple[str, int], Head]) -> None:
        """Put each head this process marked but did not get past back to the crashes counted before it."""
        by_count: dict[int, dict[tuple[str, int], int]] = {}
        for k, h in heads.items():
            if h.marked:
                by_count.setdefault(h.crashes, {})[k] = h.offset
                h.marked = False
        try:
            for started, offsets in by_count.items():
                self._commit(offsets, started)
        except KafkaIOError as e:
            log.warning("%s", e)

    def close(self) -> None:
        """Leave the group. A head this process marked but did not get past (stopped while Triton was down) is
        put back to the crashes counted before it: a graceful stop is not a crash."""
        try:
            self._unmark(self.heads)
        finally:
            self.consumer.close()
