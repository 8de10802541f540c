"""Backfill: replay uploads of a time range through the live worker's code path into a feature topic
version of its own (say media.item-features.v2), paced so it cannot starve live traffic, resumable.

The plan is fixed when a backfill starts: per partition of the source topic, the offsets from the first
record at or after ``since`` to the first at or after ``until`` (``offsets_for_times``). It is stored as
the metadata of the backfill group's committed offsets, so a rerun after a crash finds it in Kafka,
continues each partition after its last delivered batch and skips finished partitions; no local state.
Records inside a partition's span whose own timestamp is outside [since, until) (producers may set
timestamps out of order) are passed over, so the result is exactly the uploads of the range.

Outputs are delivered before offsets are committed (at-least-once); feature records are deterministic
and keyed by item on a compacted topic, so a batch redone after a crash rewrites the same values.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Message, TopicPartition

from mmfeat.errors import ConfigError, KafkaIOError
from mmfeat.kafka.client import TopicSpec, coords, ensure_topics, high_watermark, topic_partitions
from mmfeat.kafka.consumer import BatchConsumer, read_metadata
from mmfeat.schemas import DeferredRecordV1, validate_json
from mmfeat.settings import Settings
from workers.core import Kind, Outcome
from workers.triton_client import serve_captioner
from workers.worker import CaptionWorker, live_parts

log = logging.getLogger("mmfeat.backfill")

Source = Literal["uploads", "deferred"]
PLAN_VERSION = 1
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def is_relative(text: str) -> bool:
    """Whether a --since/--until value depends on when it is read (``now``, ``2h``)."""
    return text.strip() == "now" or bool(_AGO.match(text.strip()))


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``now``, a duration ago (``90s``, ``30m``, ``2h``, ``7d``) or ISO-8601 (no offset means UTC)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    if m := _AGO.match(text):
        return now - timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"cannot read time {text!r}: use now, 30m / 2h / 7d (that long ago) or ISO-8601") from e
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Request:
    """What a backfill replays and where to: the identity of a plan."""

    source: Source
    source_topic: str
    features_topic: str
    model: str  # the Triton model that captions
    since_ms: int
    until_ms: int

    def tag(self, start: int, end: int) -> dict[str, Any]:
        """The commit metadata of one partition: this request plus the partition's span."""
        fields = {"v": PLAN_VERSION, "to": self.features_topic, "model": self.model, "since": self.since_ms, "until": self.until_ms}
        return fields | {"start": start, "end": end}

    def same_target(self, meta: dict[str, Any]) -> bool:
        """A stored plan of this source, into this topic, with this captioner."""
        return bool(meta.get("v") == PLAN_VERSION and meta.get("to") == self.features_topic and meta.get("model") == self.model)


@dataclass
class PartitionProgress:
    """One partition of the plan: its span [start, end), where this run began, and what came out."""

    partition: int
    start: int
    end: int
    resumed_at: int
    position: int
    features: int = 0
    dlq: int = 0
    outside: int = 0  # inside the span, but with a timestamp outside the range

    @property
    def total(self) -> int:
        return self.end - self.start

    @property
    def done(self) -> int:
        return min(self.position, self.end) - self.start

    @property
    def finished(self) -> bool:
        return self.position >= self.end


@dataclass
class Summary:
    request: Request
    group_id: str
    partitions: list[PartitionProgress]
    seconds: float = 0.0
    stopped: bool = False  # ended by a signal before the plan was done
    dlq_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return all(p.finished for p in self.partitions)

    @property
    def records_this_run(self) -> int:
        return sum(p.position - p.resumed_at for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        parts = [asdict(p) | {"finished": p.finished} for p in self.partitions]
        return {
            "request": asdict(self.request), "group_id": self.group_id, "partitions": parts, "seconds": round(self.seconds, 3),
            "stopped": self.stopped, "finished": self.finished, "records_this_run": self.records_this_run,
            "features": sum(p.features for p in self.partitions), "dlq": sum(p.dlq for p in self.partitions),
            "outside": sum(p.outside for p in self.partitions), "dlq_reasons": self.dlq_reasons,
        }  # fmt: skip


class Pacer:
    """At most ``rate`` records per second over any stretch longer than one batch: each batch of n waits
    until the previous ones have had their n / rate seconds (a virtual-scheduling rate limiter)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ConfigError("the backfill rate must be > 0 records per second")
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self._free = clock()

    def wait(self, n: int) -> float:
        """Block until ``n`` more records may go; return the seconds waited."""
        now = self._clock()
        start = max(now, self._free)
        self._free = start + n / self.rate
        if start > now:
            self._sleep(start - now)
        return start - now


def unwrap_deferred(raw: bytes) -> bytes:
    """The upload a deferred record carries (a backfill of media.uploads.deferred captions those)."""
    return validate_json(DeferredRecordV1, raw).upload_json.encode()


class Backfill:
    def __init__(
        self,
        settings: Settings,
        request: Request,
        *,
        group_id: str,
        rate: float,
        restart: bool = False,
        exact_range: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if request.until_ms <= request.since_ms:
            raise ConfigError("--until must be later than --since")
        if request.features_topic == settings.topics.features_topic and request.source == "uploads":
            log.warning("backfill writes into %s, the topic the live worker writes", request.features_topic)
        self.request, self.group_id, self.restart, self.exact_range = request, group_id, restart, exact_range
        s = settings.updated({
                "features_topic": request.features_topic, "group_id": group_id, "triton_model": request.model,
                "worker_metrics_port": settings.metrics.backfill_metrics_port,
                # its own dedupe store: RocksDB allows one process per store, and the live worker holds its own
                "dedupe_path": settings.dedupe_store.with_name(f"dedupe-{group_id}"),
            }
        )  # fmt: skip
        self.s = s
        self.spans: dict[int, PartitionProgress] = {}
        # the live worker's code path with parts of its own: no budget (the pacer paces), the plan in every commit
        parts = live_parts(s, budget=False, unwrap=unwrap_deferred if request.source == "deferred" else None)
        consumer = BatchConsumer(s, group_id, metadata=self._tag, max_crashes=s.worker.max_crashes_per_record, isolate=s.worker.batch_size)
        self.worker = CaptionWorker(s, parts=parts, consumer=consumer)
        self.pacer = Pacer(rate, clock)
        # A batch goes at once: at most a second's worth keeps bursts within the rate.
        self.batch_size = max(1, min(s.worker.batch_size, int(rate)))
        self.summary = Summary(request, group_id, [])

    def _tag(self, topic: str, partition: int) -> dict[str, Any]:
        p = self.spans[partition]
        return self.request.tag(p.start, p.end)

    # ---- the plan -----------------------------------------------------------------------------

    def _offsets_at(self, parts: list[int], ms: int, highs: dict[int, int]) -> dict[int, int]:
        """Per partition, the first offset with a timestamp >= ``ms`` (the high watermark when none)."""
        topic = self.request.source_topic
        found = self.worker.bc.consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=30)
        return {tp.partition: tp.offset if tp.offset >= 0 else highs[tp.partition] for tp in found}

    def plan(self) -> list[PartitionProgress]:
        """This group's stored plan when it is unfinished (or is this very request), else a new one, committed at once.

        An unfinished plan for the same topic and model is continued whatever relative times (``now``, ``2h``)
        resolve to on this run; explicit times that differ from it are refused, as is any other unfinished plan.
        """
        c, topic = self.worker.bc.consumer, self.request.source_topic
        tmeta = c.list_topics(topic, timeout=10).topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise KafkaIOError(f"topic {topic} does not exist on {self.s.kafka.bootstrap_servers}")
        parts = sorted(tmeta.partitions)
        committed = {tp.partition: tp for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=30)}
        stored = {p: read_metadata(tp.metadata) for p, tp in committed.items() if tp.offset >= 0}
        unfinished = [p for p, m in stored.items() if m is None or committed[p].offset < int(m.get("end", 0))]
        metas = [m for m in stored.values() if m is not None]
        ours = len(metas) == len(parts) and all(self.request.same_target(m) for m in metas)
        if stored and not self.restart:
            first = metas[0] if metas else None
            same_range = first is not None and (first["since"], first["until"]) == (self.request.since_ms, self.request.until_ms)
            if ours and unfinished and not same_range and self.exact_range:
                raise ConfigError(
                    f"consumer group {self.group_id} has an unfinished backfill of [{_iso(first)}) into {self.request.features_topic}; "
                    "rerun with that range (or relative times) to continue it, --restart to discard it, or --group for another group"
                )
            if ours and (unfinished or same_range):
                assert first is not None
                self.request = replace(self.request, since_ms=int(first["since"]), until_ms=int(first["until"]))
                self.summary.request = self.request
                for p in parts:
                    m, off = stored[p], committed[p].offset
                    assert m is not None
                    self.spans[p] = PartitionProgress(p, int(m["start"]), int(m["end"]), off, off)
                done = sum(s.finished for s in self.spans.values())
                what = f"backfill group {self.group_id}: continuing its plan [{_iso(first)}), {done} of {len(parts)} partition(s) finished"
                log.info("%s", what)
                return self._planned()
            if unfinished:
                raise ConfigError(
                    f"consumer group {self.group_id} has an unfinished backfill of another request ({first or 'offsets without a plan'}); "
                    "--restart discards it, --group picks another group"
                )
        highs = {p: high_watermark(c, topic, p) for p in parts}
        starts = self._offsets_at(parts, self.request.since_ms, highs)
        ends = self._offsets_at(parts, self.request.until_ms, highs)
        for p in parts:
            self.spans[p] = PartitionProgress(p, starts[p], max(starts[p], ends[p]), starts[p], starts[p])
        offsets = [TopicPartition(topic, p, s.start, metadata=json.dumps(self._tag(topic, p))) for p, s in self.spans.items()]
        c.commit(offsets=offsets, asynchronous=False)
        return self._planned()

    def _planned(self) -> list[PartitionProgress]:
        self.summary.partitions = [self.spans[p] for p in sorted(self.spans)]
        return self.summary.partitions

    # ---- the run ------------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self.worker.stop()

    def _account(self, todo: list[Message], out: list[Outcome]) -> None:
        for m, o in zip(todo, out, strict=True):
            p = self.spans[coords(m)[1]]
            if o.kind is Kind.FEATURE:
                p.features += 1
            else:  # a replay never defers: the pacer waits instead
                p.dlq += 1
        self.summary.dlq_reasons = dict(self.worker.stats.dlq_reasons)

    def run(self, *, progress: Callable[[list[PartitionProgress]], None] | None = None, install_signals: bool = True) -> Summary:
        """Replay the plan to its end (or until SIGTERM/SIGINT); the summary says which."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        began = time.monotonic()
        w, topic, req = self.worker, self.request.source_topic, self.request
        try:
            w.metrics.serve(self.s.metrics.metrics_host, self.s.metrics.worker_metrics_port)
            if not self.spans:
                self.plan()
            todo = {p for p, s in self.spans.items() if not s.finished}
            w.bc.assign([TopicPartition(topic, p, self.spans[p].position) for p in sorted(todo)])
            if progress:
                progress(self.summary.partitions)
            while todo and not w.stopped:
                batch = w.bc.poll(self.batch_size, self.s.worker.poll_timeout_s)
                mine = [m for m in batch if self._planned_next(m)]
                if not mine:
                    self._finish_caught_up(todo)
                    continue
                in_range = []
                for m in mine:
                    if req.since_ms <= m.timestamp()[1] < req.until_ms:
                        in_range.append(m)
                    else:
                        self.spans[coords(m)[1]].outside += 1
                self.pacer.wait(len(in_range))
                out = w.handle(mine, in_range)
                if out is None:  # not delivered (rewound) or stopped while Triton was down
                    continue
                self._account(in_range, out)
                for m in mine:
                    _, part, off = coords(m)
                    self.spans[part].position = max(self.spans[part].position, off + 1)
                self._finish_caught_up(todo)
                if progress:
                    progress(self.summary.partitions)
        finally:
            self.summary.seconds = time.monotonic() - began
            self.summary.stopped = not self.summary.finished
            w.close()
        return self.summary

    def _planned_next(self, msg: Message) -> bool:
        """Inside its partition's span and not done yet (a rewound batch comes again)."""
        _, part, off = coords(msg)
        s = self.spans[part]
        return s.position <= off < s.end

    def _finish_caught_up(self, todo: set[int]) -> None:
        """Retire partitions whose span is done; a position past the end counts too (control records)."""
        c, topic = self.worker.bc.consumer, self.request.source_topic
        for p in list(todo):
            s = self.spans[p]
            if not s.finished:
                pos = c.position([TopicPartition(topic, p)])[0].offset
                if pos >= s.end:
                    s.position = s.end
            if s.finished:
                todo.discard(p)
                c.incremental_unassign([TopicPartition(topic, p)])
                if s.position > s.resumed_at or s.total == 0:
                    log.debug("backfill %s[%d]: done (%d record(s))", topic, p, s.total)


def _iso(meta: dict[str, Any] | None) -> str:
    if meta is None:
        return "?"
    return " .. ".join(datetime.fromtimestamp(int(meta[k]) / 1000, UTC).isoformat() for k in ("since", "until"))


def start_backfill(
    settings: Settings,
    *,
    since: str,
    features_topic: str,
    until: str = "now",
    captioner: str | None = None,
    source: str = "uploads",
    rate: float | None = None,
    group_id: str | None = None,
    restart: bool = False,
) -> Backfill:
    """Everything `mmfeat backfill` does before the replay: the captioner loaded into Triton (a directory) or
    named (a served model), the range read, the target topic created like its source, the plan fixed.

    ``job.run(progress=...)`` then replays it. Times are ``now``, ``30m``/``2h``/``7d`` ago or ISO-8601; an
    unfinished plan of the same group is continued (see ``Backfill.plan``)."""
    if source not in ("uploads", "deferred"):
        raise ConfigError(f"--source is uploads or deferred, not {source!r}")
    source_topic = settings.topics.uploads_topic if source == "uploads" else settings.topics.deferred_topic
    model = settings.triton.triton_model
    if captioner is not None:
        model = serve_captioner(settings.triton.triton_url or "", Path(captioner)) if Path(captioner).exists() else captioner
    t0, t1 = parse_time(since), parse_time(until)
    req = Request(source, source_topic, features_topic, model, int(t0.timestamp() * 1000), int(t1.timestamp() * 1000))  # type: ignore[arg-type]
    partitions = topic_partitions(settings, source_topic) or 4
    ensure_topics(settings, [TopicSpec(features_topic, partitions, compacted=True)])
    group = group_id or f"mmfeat-backfill.{source}.{features_topic}"
    exact = not (is_relative(since) or is_relative(until))
    job = Backfill(settings, req, group_id=group, rate=rate or settings.worker.budget_rate_per_s / 10, restart=restart, exact_range=exact)
    job.plan()
    return job
