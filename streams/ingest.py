"""The profiles app's first stage: engagements validated and re-keyed by user partition, in micro-batches, on the
project's own batch consumer (mmfeat/kafka/consumer.py, the caption worker's), in a thread of the app's process.

This stage is stateless, so it needs neither Faust's tables nor its stream machinery, and Faust's cost per event is
most of a Faust agent's time (a Faust agent that only counts events did 14.7k/s here, docs/benchmarks.md):
librdkafka fetches and decodes a batch in C instead. What the stage guarantees is what the dedupe in the user's
state needs (mmfeat/profile.py): each incarnation sends a user's engagements of one source partition in offset
order, from where the group last committed, and commits only after its sends are acknowledged. Its consumer group
is ``<app id>-ingest``; the partitions are shared among the app's workers like the app's own.

Engagements wait for the item features: the stage starts once the app's group has committed every features
partition up to where it ended when the stage started (so a replay joins against loaded features), or after
``features_first_timeout_s``. The condition is read from Kafka, so it holds across workers.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from confluent_kafka import Message

from mmfeat.dlq import dead_letter
from mmfeat.engagements import Engagement, EngagementRules
from mmfeat.errors import RecordError, RecordRef, as_record_error
from mmfeat.kafka.client import DeliveryTracker, OutRecord, committed_offsets, coords, partition_ends
from mmfeat.kafka.consumer import BatchConsumer
from mmfeat.metrics import ProfileMetrics
from mmfeat.schemas import peek_item_id
from mmfeat.settings import Settings
from mmfeat.topics import internal_topics
from streams.records import entry

log = logging.getLogger("mmfeat.profiles")


def engagements_message(batch: list[Engagement]) -> bytes:
    """An ``EngagementsMsg`` (streams/records.py), encoded directly: its entries come from validated engagements,
    and the receiving stage validates it again like any input."""
    return json.dumps({"kind": "engagements", "entries": [entry(e) for e in batch]}, separators=(",", ":"), allow_nan=False).encode()


class Ingest:
    def __init__(self, settings: Settings, rules: EngagementRules, partition_of: object, metrics: ProfileMetrics) -> None:
        self.s, self.rules, self.partition_of, self.metrics = settings, rules, partition_of, metrics
        p = settings.profiles
        self.group = f"{p.profiles_app_id}-ingest"
        self.by_user = internal_topics(settings)["by_user"]
        self.bc = BatchConsumer(
            settings,
            self.group,
            on_stats=metrics.on_stats,
            max_crashes=settings.worker.max_crashes_per_record,
            isolate=p.profiles_batch_max,
            session_timeout_s=p.profiles_session_timeout_s,
        )
        self.tracker = DeliveryTracker.of(settings)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="profiles-ingest", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self.thread.join(timeout_s)

    # ---- the features-first gate ----------------------------------------------------------------

    def features_loaded(self, ends: dict[int, int]) -> bool:
        """Whether the app's group has committed every features partition up to ``ends``."""
        topic = self.s.topics.features_topic
        got = committed_offsets(self.s, self.s.profiles.profiles_app_id, topic, ends)
        return all(got.get(p, 0) >= end for p, end in ends.items())

    def wait_for_features(self) -> None:
        began = time.monotonic()
        ends = {p: end for p, end in partition_ends(self.s, self.s.topics.features_topic).items() if end > 0}
        timeout = self.s.profiles.features_first_timeout_s
        while not self._stop.is_set() and ends and not self.features_loaded(ends):
            if time.monotonic() - began > timeout:
                log.warning("features not loaded after %.0fs: engagements start anyway", timeout)
                return
            self._stop.wait(0.2)
        log.warning("features read to offsets %s in %.1fs: engagements start", ends, time.monotonic() - began)

    # ---- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.wait_for_features()
            self.bc.subscribe([self.s.topics.engagements_topic])
            p = self.s.profiles
            while not self._stop.is_set():
                batch = self.bc.poll(p.profiles_batch_max, p.profiles_batch_window_s)
                if batch:
                    self.handle(batch)
        except BaseException as e:  # handed to the app, which stops with one line (streams/app.py)
            self.error = e
            log.error("profiles ingest stopped: %s", e)
        finally:
            self.bc.close()
            self.tracker.flush(10)

    def outputs(self, batch: list[Message], give_up: set[tuple[str, int, int]]) -> list[OutRecord]:
        """One by-user message per user partition (in source offset order), and a DLQ record per bad engagement."""
        groups: dict[int, list[Engagement]] = {}
        out: list[OutRecord] = []
        for m in batch:
            topic, part, off = coords(m)
            try:
                if (topic, part, off) in give_up:  # the app died twice with it at the head of its partition
                    raise RecordError("profiles app process(es) died with this record at the head of its partition", reason="crash_loop")
                e = self.rules.parse(m.value(), topic=topic, partition=part, offset=off, timestamp_s=m.timestamp()[1] / 1000)
            except Exception as err:  # the boundary: any failure about this engagement is its DLQ record
                letter = dead_letter(RecordRef(topic, part, off, peek_item_id(m.value())), as_record_error(err), m.key(), m.value())
                out.append(OutRecord(self.s.topics.engagements_dlq_topic, m.key(), letter.value, list(letter.headers)))
                self.metrics.dlq.labels(letter.reason).inc()
                continue
            groups.setdefault(self.partition_of(e.user_id), []).append(e)  # type: ignore[operator]
        for q, engagements in sorted(groups.items()):
            out.append(OutRecord(self.by_user, None, engagements_message(engagements), partition=q))
        return out

    def handle(self, batch: list[Message]) -> None:
        """Outputs delivered, then offsets committed: a crash redelivers, never skips (the state dedupes)."""
        out = self.bc.deliver(batch, lambda give_up: self.outputs(batch, give_up), self.tracker, self.s.kafka.delivery_timeout_s)
        if out is not None:
            self.metrics.records_in.labels(self.s.topics.engagements_topic).inc(len(batch))
            self.metrics.records_out.labels(self.s.topics.engagements_dlq_topic).inc(sum(o.topic != self.by_user for o in out))
