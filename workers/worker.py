"""The caption worker loop: consume a micro-batch, gate, fetch, caption, build features, produce,
and only then commit.

Every upload ends as exactly one of: a feature record (media.item-features.v1), a deferred record
(budget overflow, media.uploads.deferred) or a DLQ record with its reason (media.uploads.dlq).
Delivery is at-least-once; feature records are deterministic, so a redelivered upload rewrites
the same value under the same key of a compacted topic.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message, TopicPartition

from mmfeat.errors import CaptionerUnavailable, KafkaIOError, RecordError, RecordRef
from mmfeat.features import FeatureBuilder, encode_feature, lineage_headers
from mmfeat.imaging import probe_image
from mmfeat.kafka.client import (
    DeliveryTracker,
    Headers,
    OutRecord,
    commit_offsets,
    coords,
    make_consumer,
    make_producer,
    raise_on_error,
)
from mmfeat.metrics import WorkerMetrics
from mmfeat.schemas import (
    H_DEDUPE,
    H_FEATURED_AT,
    H_REASON,
    H_SOURCE,
    DeferredRecordV1,
    UploadV1,
    dlq_record,
    now_utc,
    parse_upload,
    peek_item_id,
)
from mmfeat.settings import Settings
from mmfeat.tokenizers import load_tokenizers
from workers.fetch import FetchPolicy, fetch_media
from workers.gate import DedupeStore, TokenBucket, content_key
from workers.triton_client import CaptionResult, TritonCaptioner

log = logging.getLogger("mmfeat.worker")


@dataclass
class Pending:
    """One upload of the batch on its way to an outcome."""

    msg: Message
    ref: RecordRef
    raw: bytes  # the upload's JSON (the record value, or the upload a deferred record carries)
    upload: UploadV1
    media: bytes
    key: str
    result: CaptionResult | None = None
    dedupe_hit: bool = False


@dataclass
class Stats:
    features: int = 0
    deferred: int = 0
    dlq: int = 0
    dedupe_hits: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def handled(self) -> int:
        return self.features + self.deferred + self.dlq


class CaptionWorker:
    """The live worker; a backfill (workers/backfill.py) drives the same object with its own consumer loop."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic, defer_over_budget: bool = True) -> None:
        if not settings.triton_url:
            raise KafkaIOError("no Triton endpoint: run `mmfeat up` or set MMFEAT_TRITON_URL")
        self.s = settings
        self.policy = FetchPolicy.of(settings.allowed_roots, settings.allowed_hosts, settings.max_media_bytes, settings.fetch_timeout_s)
        self.builder = FeatureBuilder(
            load_tokenizers(settings.tokenizers, settings.tokenizer_dir, settings.hash_buckets),
            settings.tokenizers,
            settings.caption_max_words,
        )
        # A backfill paces itself and never defers: with no budget every upload is captioned.
        self.budget = TokenBucket(settings.budget_rate_per_s, settings.budget_burst, clock) if defer_over_budget else None
        self.captioner = TritonCaptioner(
            settings.triton_url, settings.triton_model, timeout_s=settings.triton_timeout_s, retries=settings.triton_retries
        )
        self.dedupe = DedupeStore(settings.dedupe_store)
        self.stats = Stats()
        self.captioner_version: str | None = None
        self._stop = False
        self._paused = False
        self.assigned = threading.Event()  # set once the group hands this worker its first partitions
        self.metrics = WorkerMetrics()
        self.consumer = make_consumer(
            settings, settings.group_id, on_stats=self.metrics.on_stats, stats_interval_s=settings.metrics_interval_s
        )
        self.producer = make_producer(settings)
        self.tracker = DeliveryTracker(self.producer)

    # ---- outcomes -----------------------------------------------------------------------------

    def _dlq(self, msg: Message, ref: RecordRef, err: RecordError) -> OutRecord:
        rec = dlq_record(ref, err, msg.key(), msg.value())
        log.warning("DLQ %s: %s: %s", ref, err.reason, err)
        self.stats.dlq += 1
        self.stats.dlq_reasons[err.reason] += 1
        headers: Headers = [(H_SOURCE, str(ref).encode()), (H_REASON, err.reason.encode())]
        return OutRecord(
            self.s.dlq_topic, ref.item_id or (msg.key() or b"").decode("utf-8", "replace"), rec.model_dump_json().encode(), headers
        )

    def _deferred(self, p: Pending) -> OutRecord:
        rec = DeferredRecordV1(
            item_id=p.upload.item_id, reason="budget", upload_json=p.raw.decode(), source=str(p.ref), deferred_at=now_utc()
        )
        log.info("deferred %s: captioner budget exhausted", p.ref)
        self.stats.deferred += 1
        return OutRecord(
            self.s.deferred_topic,
            p.upload.item_id,
            rec.model_dump_json().encode(),
            [(H_SOURCE, str(p.ref).encode()), (H_REASON, b"budget")],
        )

    def _feature(self, p: Pending) -> OutRecord:
        assert p.result is not None
        record = self.builder.build(p.upload, p.result.caption, p.result.captioner_version, p.key)
        headers: Headers = [
            *lineage_headers(record),
            (H_FEATURED_AT, now_utc().isoformat().encode()),
            (H_SOURCE, str(p.ref).encode()),
            (H_DEDUPE, b"hit" if p.dedupe_hit else b"miss"),
        ]
        self.stats.features += 1
        return OutRecord(self.s.features_topic, record.item_id, encode_feature(record), headers, record.upload_created_at.timestamp())

    # ---- one micro-batch ----------------------------------------------------------------------

    def upload_value(self, msg: Message) -> bytes:
        """The upload JSON a consumed record carries: its value (a backfill of deferred records unwraps them)."""
        raw = msg.value()
        if raw is None:
            raise RecordError("record has no value (tombstone)", reason="schema")
        return raw

    def _admit(self, msg: Message) -> Pending | OutRecord:
        """Validate and fetch one record; bad input becomes its DLQ record here."""
        ref = RecordRef(*coords(msg), peek_item_id(msg.value()))
        try:
            raw = self.upload_value(msg)
            if len(raw) > self.s.max_media_bytes * 2:
                raise RecordError(
                    f"record is {len(raw)} bytes, over the {self.s.max_media_bytes * 2}-byte limit", reason="record_too_large"
                )
            upload = parse_upload(raw)
            ref = RecordRef(ref.topic, ref.partition, ref.offset, upload.item_id)
            media = fetch_media(upload, self.policy)
            probe_image(media, self.s.max_pixels)  # refuse bombs and non-images before Triton
            return Pending(msg, ref, raw, upload, media, content_key(media, self.s.prompt))
        except RecordError as e:
            return self._dlq(msg, ref, e)

    def process(self, msgs: list[Message]) -> list[OutRecord]:
        """Turn a micro-batch into its output records, in input order. Raises CaptionerUnavailable."""
        admitted = [self._admit(m) for m in msgs]
        pending = [a for a in admitted if isinstance(a, Pending)]
        # Dedupe: the store first, then identical content within this batch shares one request.
        to_caption: dict[str, list[Pending]] = {}
        if self.captioner_version is None and any(self.dedupe.has(p.key) for p in pending):
            self.captioner_version = self.captioner.probe_version()  # a cache entry is only good for this version
        for p in pending:
            cached = self.dedupe.get(p.key, self.captioner_version)
            if cached is not None:
                assert self.captioner_version is not None
                p.result, p.dedupe_hit = CaptionResult(cached, self.captioner_version), True
            else:
                to_caption.setdefault(p.key, []).append(p)
        # Budget: one token per captioner call; what does not fit is deferred.
        keys = [k for k in to_caption if self.budget is None or self.budget.try_take()]
        deferred = {id(p) for k in to_caption if k not in set(keys) for p in to_caption[k]}
        began = time.monotonic()
        results = self.captioner.caption_many([(to_caption[k][0].media, self.s.prompt) for k in keys])
        if keys:
            self.metrics.triton_seconds.observe(time.monotonic() - began)
            self.metrics.triton_batch.observe(len(keys))
        rejected: dict[int, RecordError] = {}
        for k, res in zip(keys, results, strict=True):
            group = to_caption[k]
            if isinstance(res, CaptionResult):
                self.captioner_version = res.captioner_version
                self.dedupe.put(k, res.captioner_version, res.caption)
                for n, p in enumerate(group):
                    p.result, p.dedupe_hit = res, n > 0
            else:
                rejected.update((id(p), res) for p in group)
        out: list[OutRecord] = []
        for a in admitted:
            if isinstance(a, OutRecord):
                out.append(a)
            elif id(a) in deferred:
                out.append(self._deferred(a))
            elif id(a) in rejected:
                out.append(self._dlq(a.msg, a.ref, rejected[id(a)]))
            else:
                self.stats.dedupe_hits += a.dedupe_hit
                out.append(self._feature(a))
        return out

    # ---- the loop -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.assigned.set()
        if self._paused:  # partitions handed over while Triton is down stay paused too
            consumer.pause(partitions)

    def _wait_for_captioner(self, batch: list[Message]) -> None:
        """Pause consumption until Triton is ready again; keep group membership meanwhile."""
        log.warning("Triton at %s unavailable: pausing consumption with %d record(s) in hand", self.captioner.url, len(batch))
        self._paused = True
        self.consumer.pause(self.consumer.assignment())
        delay = self.s.triton_unavailable_backoff_s
        while not self._stop and not self.captioner.ready():
            msg = self.consumer.poll(min(delay, 5.0))
            if msg is not None and msg.error() is None:  # from a partition assigned meanwhile: put it back
                tp = TopicPartition(*coords(msg))
                self.consumer.pause([tp])
                self.consumer.seek(tp)
            delay = min(delay * 2, 10.0)
        self.consumer.resume(self.consumer.assignment())
        self._paused = False
        if not self._stop:
            log.warning("Triton ready again: resuming")

    def _rewind(self, batch: list[Message]) -> None:
        """Seek each partition back to the first record of a batch whose outputs were not delivered."""
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            topic, partition, offset = coords(m)
            first.setdefault((topic, partition), offset)
        for (t, p), o in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, o))
            except Exception as e:  # partition revoked meanwhile: its new owner starts at the last commit
                log.warning("cannot rewind %s[%d] to %d: %s", t, p, o, e)

    def handle(self, batch: list[Message], todo: list[Message] | None = None) -> list[OutRecord] | None:
        """Process a batch to completion: outputs delivered, then offsets committed.

        ``todo`` (default: all of ``batch``) are the records to process; the offsets of the whole batch are
        committed. Returns the outputs in ``todo`` order, or None when they were not delivered (the batch is
        rewound and comes again) or the worker was stopped while Triton was down.
        """
        todo = batch if todo is None else todo
        while True:
            try:
                out = self.process(todo)
                break
            except CaptionerUnavailable:
                self._wait_for_captioner(batch)
                if self._stop:
                    return None
        try:
            self.tracker.produce_all(out, self.s.delivery_timeout_s)
        except KafkaIOError as e:
            log.error("outputs of %d record(s) not delivered (%s): will retry them", len(batch), e)
            self._rewind(batch)
            time.sleep(1.0)
            return None
        self._observe(batch, out)
        try:
            self.commit(batch)
        except KafkaIOError as e:  # e.g. a rebalance: the records are redelivered, outputs rewrite the same values
            log.warning("%s", e)
        return out

    def _observe(self, batch: list[Message], out: list[OutRecord]) -> None:
        """Metrics of a delivered batch (counted once delivered, so a retried batch counts once)."""
        m, now = self.metrics, time.time()
        m.count_in(coords(msg)[0] for msg in batch)
        m.count_out(rec.topic for rec in out)
        for rec in out:
            reason = next((v for k, v in rec.headers if k == H_REASON), None)
            if rec.topic == self.s.dlq_topic:
                m.dlq.labels(_text(reason)).inc()
            elif rec.topic == self.s.deferred_topic:
                m.deferred.labels(_text(reason)).inc()
            elif rec.event_time_s is not None:
                m.freshness.observe(max(0.0, now - rec.event_time_s))
            if (H_DEDUPE, b"hit") in rec.headers:
                m.dedupe_hits.inc()

    def commit(self, batch: list[Message]) -> None:
        commit_offsets(self.consumer, batch)

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(
        self,
        *,
        idle_exit_s: float | None = None,
        max_records: int | None = None,
        on_batch: Callable[[Stats], None] | None = None,
        install_signals: bool = True,
    ) -> Stats:
        """Consume until stopped (SIGTERM/SIGINT), idle for ``idle_exit_s``, or ``max_records`` handled."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.metrics.serve(self.s.metrics_host, self.s.worker_metrics_port)
        self.consumer.subscribe([self.s.uploads_topic], on_assign=self._on_assign)
        last_record = time.monotonic()
        try:
            while not self._stop:
                batch = self.consumer.consume(num_messages=self.s.batch_size, timeout=self.s.poll_timeout_s)
                for m in batch:
                    err = m.error()
                    if err is not None and err.fatal():
                        raise_on_error(m)
                    if err is not None:  # transient (broker restart, rebalance): librdkafka recovers
                        log.warning("consumer: %s", err.str())
                batch = [m for m in batch if m.error() is None]
                if not batch:
                    if not self.consumer.assignment():
                        last_record = time.monotonic()  # idle only counts once partitions are ours
                    elif idle_exit_s is not None and time.monotonic() - last_record > idle_exit_s:
                        break
                    continue
                last_record = time.monotonic()
                self.handle(batch)
                if on_batch:
                    on_batch(self.stats)
                if max_records is not None and self.stats.handled >= max_records:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
            self.captioner.close()
            self.dedupe.close()
            self.metrics.close()


def _text(v: str | bytes | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "unknown")


class BackgroundWorker:
    """A CaptionWorker on a thread of this process (the demo, tests and benchmarks); ``join`` re-raises."""

    def __init__(self, settings: Settings, **run_kwargs: Any) -> None:
        self.worker = CaptionWorker(settings)
        self.stats: Stats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, kwargs=run_kwargs, name="caption-worker", daemon=True)
        self._thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.stats = self.worker.run(install_signals=False, **kwargs)
        except BaseException as e:  # handed to the caller by join()
            self.error = e

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> Stats:
        """Wait for the run to end; stop it and raise if it is still going after ``timeout_s``."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.worker.stop()
            self._thread.join(30)
            raise TimeoutError(f"caption worker still running after {timeout_s:.0f}s")
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats
