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
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from mmfeat.errors import CaptionerUnavailable, KafkaIOError, RecordError, RecordRef
from mmfeat.features import FeatureBuilder
from mmfeat.kafka.client import DeliveryTracker, OutRecord, coords
from mmfeat.kafka.consumer import BatchConsumer
from mmfeat.media import Limits, kind_of
from mmfeat.media.audio import AudioLimits
from mmfeat.media.video import VideoLimits
from mmfeat.metrics import WorkerMetrics
from mmfeat.schemas import peek_item_id
from mmfeat.settings import Settings
from workers.core import CaptionCore, Incoming, Kind, Outcome, Parts, Stats, Topics
from workers.fetch import FetchPolicy, fetch_media
from workers.gate import DedupeStore, TokenBucket, content_key
from workers.triton_client import TritonAsr, TritonCaptioner, TritonOcr

log = logging.getLogger("mmfeat.worker")


def media_limits(s: Settings) -> Limits:
    """The bounds every media kind's probe enforces, from the fetch and media sections."""
    m = s.media
    video = VideoLimits(
        m.max_video_seconds, m.max_video_pixels, m.max_video_frames, m.video_decode_timeout_s, m.video_memory_mb, m.video_frames,
        m.video_scene_threshold,
    )  # fmt: skip
    return Limits(
        max_pixels=s.fetch.max_pixels, video=video, audio=AudioLimits(m.max_audio_seconds, m.video_decode_timeout_s, m.video_memory_mb)
    )


def live_parts(
    settings: Settings, *, budget: bool = True, unwrap: Callable[[bytes], bytes] | None = None, clock: Callable[[], float] = time.monotonic
) -> Parts:
    """The parts the caption core calls: Triton, the dedupe store, fetch under the policy, the media kind's
    frames (its probe first), the tokenizers, and OCR / ASR when ``MMFEAT_OCR_MODEL`` / ``MMFEAT_ASR_MODEL`` name one. A backfill passes
    ``budget=False`` (its pacer paces, nothing is deferred) and ``unwrap``."""
    s = settings
    if not s.triton.triton_url:
        raise KafkaIOError("no Triton endpoint: run `mmfeat up` or set MMFEAT_TRITON_URL")
    limits = media_limits(s)
    f = s.fetch
    policy = FetchPolicy.of(f.allowed_roots, f.allowed_hosts, f.max_media_bytes, f.fetch_timeout_s)
    return Parts(
        captioner=TritonCaptioner(
            s.triton.triton_url, s.triton.triton_model, timeout_s=s.triton.triton_timeout_s, retries=s.triton.triton_retries
        ),
        cache=DedupeStore.first_free(s.dedupe_store),
        builder=FeatureBuilder.of(s.features),
        fetch=lambda upload: fetch_media(upload, policy),
        prepare=lambda upload, media: kind_of(upload.media_type).prepare(media, limits),
        content_key=lambda media: content_key(media, s.triton.prompt),
        topics=Topics(s.topics.features_topic, s.topics.deferred_topic, s.topics.dlq_topic),
        budget=TokenBucket(s.worker.budget_rate_per_s, s.worker.budget_burst, clock) if budget else None,
        prompt=s.triton.prompt,
        max_record_bytes=s.fetch.max_media_bytes * 2,
        unwrap=unwrap or (lambda raw: raw),
        ocr=TritonOcr(s.triton.triton_url, s.triton.ocr_model, timeout_s=s.triton.triton_timeout_s, retries=s.triton.triton_retries)
        if s.triton.ocr_model
        else None,
        ocr_budget=TokenBucket(s.worker.ocr_budget_rate_per_s, s.worker.ocr_budget_burst, clock) if budget else None,
        asr=TritonAsr(s.triton.triton_url, s.triton.asr_model, timeout_s=s.triton.triton_timeout_s, retries=s.triton.triton_retries)
        if s.triton.asr_model
        else None,
        asr_budget=TokenBucket(s.worker.asr_budget_rate_per_s, s.worker.asr_budget_burst, clock) if budget else None,
    )


class CaptionWorker:
    """The Kafka loop around the pure core: poll a batch, run the core, produce every outcome, commit.

    A backfill (workers/backfill.py) injects its own parts and consumer and drives ``handle`` itself."""

    def __init__(
        self,
        settings: Settings,
        *,
        parts: Parts | None = None,
        consumer: BatchConsumer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.parts = parts or live_parts(settings, clock=clock)
        self.metrics = WorkerMetrics()
        self.core = CaptionCore(self.parts, on_call=self._observe_call)
        self.stats = Stats()
        self._stop = False
        self.bc = consumer or BatchConsumer(
            settings, settings.worker.group_id, on_stats=self.metrics.on_stats, max_crashes=settings.worker.max_crashes_per_record,
            isolate=settings.worker.batch_size,
        )  # fmt: skip
        self.tracker = DeliveryTracker.of(settings)

    @property
    def assigned(self) -> threading.Event:
        return self.bc.assigned

    @property
    def captioner_version(self) -> str | None:
        return self.core.captioner_version

    # ---- one micro-batch ----------------------------------------------------------------------

    def outcomes(self, msgs: list[Message], give_up: set[tuple[str, int, int]] | None = None) -> list[Outcome]:
        """One outcome per record, in order; records in ``give_up`` (a crash loop) go to the DLQ unprocessed."""
        give_up = give_up or set()
        incoming = [Incoming(RecordRef(*coords(m)), m.key(), m.value()) for m in msgs]
        run = self.core.run([inc for m, inc in zip(msgs, incoming, strict=True) if coords(m) not in give_up])
        done = iter(run)
        out = []
        for m, inc in zip(msgs, incoming, strict=True):
            if coords(m) in give_up:
                crashes = self.bc.max_crashes
                err = RecordError(f"{crashes} worker process(es) died with this record at the head of its partition", reason="crash_loop")
                out.append(self.core.dlq(inc, RecordRef(*coords(m), peek_item_id(m.value())), err))
            else:
                out.append(next(done))
        return out

    def _models_ready(self) -> bool:
        """The models whose outage pauses the loop are ready: the captioner, and OCR where configured (ASR's outage
        defers only the uploads with sound: the core does that without pausing)."""
        return all(m.ready() for m in (self.parts.captioner, self.parts.ocr) if m is not None)

    def _wait_for_captioner(self) -> None:
        """Pause consumption until Triton and every model the core calls are ready again; keep group membership meanwhile."""
        url = getattr(self.parts.captioner, "url", "?")
        names = [getattr(m, "model", "?") for m in (self.parts.captioner, self.parts.ocr) if m is not None]
        log.warning("Triton at %s unavailable (models %s): pausing consumption", url, ", ".join(names))
        self.bc.pause_all()
        delay = self.s.triton.triton_unavailable_backoff_s
        while not self._stop and not self._models_ready():
            for msg in self.bc.poll(1, min(delay, 5.0)):
                self.bc.hold(msg)
            delay = min(delay * 2, 10.0)
        self.bc.resume_all()
        if not self._stop:
            log.warning("Triton ready again: resuming")

    def handle(self, batch: list[Message], todo: list[Message] | None = None) -> list[Outcome] | None:
        """Process a batch to completion: outputs delivered, then offsets committed.

        ``todo`` (default: all of ``batch``) are the records to process; the offsets of the whole batch are
        committed. Returns the outcomes in ``todo`` order, or None when they were not delivered (the batch is
        rewound and comes again: also right after a crash, to take it one record at a time) or the worker was
        stopped while Triton was down.
        """
        todo = batch if todo is None else todo
        outcomes: list[Outcome] = []

        def records(give_up: set[tuple[str, int, int]]) -> list[OutRecord] | None:
            while True:
                try:
                    outcomes.extend(self.outcomes(todo, give_up))
                    return [o.record for o in outcomes]
                except CaptionerUnavailable:
                    self._wait_for_captioner()
                    if self._stop:
                        return None

        if self.bc.deliver(batch, records, self.tracker, self.s.kafka.delivery_timeout_s) is None:
            return None
        self.stats.count(outcomes)
        self._observe(batch, outcomes)
        return outcomes

    def _observe_call(self, seconds: float, images: int) -> None:
        self.metrics.triton_seconds.observe(seconds)
        self.metrics.triton_batch.observe(images)

    def _observe(self, batch: list[Message], out: list[Outcome]) -> None:
        """Metrics of a delivered batch (counted once delivered, so a retried batch counts once)."""
        m, now = self.metrics, time.time()
        m.count_in(coords(msg)[0] for msg in batch)
        m.count_out(o.record.topic for o in out)
        for o in out:
            if o.kind is Kind.DLQ:
                m.dlq.labels(o.reason or "unknown").inc()
            elif o.kind is Kind.DEFERRED:
                m.deferred.labels(o.reason or "unknown").inc()
            elif o.record.event_time_s is not None:
                m.freshness.observe(max(0.0, now - o.record.event_time_s))
            if o.dedupe_hit:
                m.dedupe_hits.inc()

    # ---- the loop -----------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

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
        self.metrics.serve(self.s.metrics.metrics_host, self.s.metrics.worker_metrics_port)
        self.bc.subscribe([self.s.topics.uploads_topic])
        last_record = time.monotonic()
        try:
            while not self._stop:
                batch = self.bc.poll(self.s.worker.batch_size, self.s.worker.poll_timeout_s)
                if not batch:
                    if not self.bc.consumer.assignment():
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
            self.bc.close()
        finally:
            self.tracker.flush(10)
            self.parts.captioner.close()
            self.parts.cache.close()
            self.metrics.close()


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
