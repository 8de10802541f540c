"""The profiles app's agents, one builder each (faust's own examples' shape), over a shared ``Wiring``.

    engagements ──streams/ingest.py──► <app>-by-user ◄──ingest_features── media.item-features.v1
                   (validate, micro-batch,     │          (the profile tokenizer's ids, broadcast
                    one message per user       │           to every partition)
                    partition; not Faust)      ▼
                                        update_profiles: ProfileStage (streams/stage.py) per partition
                                        ──► user.profiles.v1 (coalesced), engagements.unmatched, engagements.dlq

Every record is handled inside one boundary (``Wiring.guard``): any exception about that record becomes its DLQ
record (``internal_error`` with the exception class when nothing more specific applies) and the agent moves on;
an infrastructure error (``InfraError``) stops the app with one line instead, for its supervisor to restart.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.streams import _current_event  # no public setter; see stage_step

from mmfeat.dlq import dead_letter
from mmfeat.engagements import EngagementRules
from mmfeat.errors import InfraError, RecordError, RecordRef, SchemaError, as_record_error
from mmfeat.features import item_features
from mmfeat.metrics import ProfileMetrics
from mmfeat.schemas import H_REASON, encode_record, peek_item_id
from mmfeat.settings import Settings
from mmfeat.untrusted import clean
from streams.records import ByUserMsg, EngagementsMsg, FeaturesMsg, TickMsg, encode, read_by_user
from streams.stage import Outputs, ProfileStage
from streams.state import ItemTokens

log = logging.getLogger("mmfeat.profiles")


@dataclass
class Topics:
    engagements: Any
    features: Any
    profiles: Any
    dlq: Any
    unmatched: Any
    by_user: Any


@dataclass
class Wiring:
    """What every agent shares: settings, the pure rules and stage, topics, metrics, the features-first gate."""

    app: faust.App
    s: Settings
    rules: EngagementRules
    stage: ProfileStage
    topics: Topics
    profiles: Any  # the profiles table (its name routes lookups)
    metrics: ProfileMetrics

    async def to_dlq(self, ref: RecordRef, err: RecordError, key: bytes | None, value: bytes | None) -> None:
        letter = dead_letter(ref, err, key, value)
        await self.topics.dlq.send(key=key, value=letter.value, headers=letter.headers)
        self.metrics.dlq.labels(letter.reason).inc()
        self.metrics.records_out.labels(self.s.topics.engagements_dlq_topic).inc()

    async def guard(self, msgs: list[Any], step: Callable[[], Awaitable[None]]) -> bool:
        """Run the step of one record (or of a run of records handled together); a failure about them becomes their DLQ
        records. Returns whether it succeeded."""
        try:
            await step()
            return True
        except InfraError as e:  # not this record's fault: stop, with one line, and let the supervisor restart us
            log.error("profiles app stopping: %s", clean(e, 500))
            await self.app.crash(e)
            raise
        except Exception as e:  # the boundary
            err = as_record_error(e)
            for msg in msgs:
                await self.to_dlq(RecordRef(msg.topic, msg.partition, msg.offset, peek_item_id(msg.value)), err, msg.key, msg.value)
            return False

    async def send(self, out: Outputs) -> None:
        """What a stage step produced: profile records, unmatched engagements, one engagement's DLQ records."""
        s, m = self.s, self.metrics
        now = time.time()
        for rec in out.profiles:
            await self.topics.profiles.send(key=rec.user_id.encode(), value=encode_record(rec))
            if rec.as_of is not None:
                m.freshness.observe(max(0.0, now - rec.as_of.timestamp()))
        m.records_out.labels(s.topics.profiles_topic).inc(len(out.profiles))
        for u in out.unmatched:
            log.warning("unmatched %s user=%s item=%s: %s", clean(u.engagement_id), u.user_id, u.item_id, u.reason)
            await self.topics.unmatched.send(key=u.user_id.encode(), value=encode_record(u), headers=[(H_REASON, u.reason.encode())])
            m.unmatched.labels(u.reason).inc()
            m.records_out.labels(s.topics.unmatched_topic).inc()
        for e, err in out.failed:  # named by its own coordinates on the engagements topic
            ref = RecordRef(s.topics.engagements_topic, e.partition or 0, e.offset or 0, e.item_id)
            await self.to_dlq(ref, err, e.user_id.encode(), encode(EngagementsMsg.of([e])))
        m.duplicates.inc(out.skipped)


def ingest_features(w: Wiring) -> None:
    """The profile tokenizer's ids of each feature record, broadcast to every user partition. Every record is acked,
    whatever became of it, so the group's committed offsets (the features-first gate, streams/ingest.py) pass a
    DLQ'd record at a partition's end too."""
    p = w.s.profiles

    @w.app.agent(w.topics.features, name="ingest_features")
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(p.profiles_batch_max, within=p.profiles_batch_window_s):
            items: list[tuple[str, list[int] | None, str | None]] = []
            w.metrics.records_in.labels(w.s.topics.features_topic).inc(len(events))
            for event in events:
                msg = event.message

                async def read(msg: Any = msg, items: list[tuple[str, list[int] | None, str | None]] = items) -> None:
                    item_id = (msg.key or b"").decode("utf-8", "replace")
                    if not item_id:
                        raise SchemaError("feature record without a key (item_id)")
                    if msg.value is None:
                        items.append((item_id, None, None))
                        return
                    tokens, lineage = item_features(msg.value, w.s.profiles.profile_tokenizer, w.s.profiles.profile_sources)
                    items.append((item_id, tokens, lineage))

                await w.guard([msg], read)
            if items:
                value = encode(FeaturesMsg(items=items))
                for q in range(p.profiles_partitions):
                    await w.topics.by_user.send(key=None, value=value, partition=q)


@dataclass
class Run:
    """Consecutive by-user messages of one partition and one kind, handled as one stage call, and whether a tick
    came among them (handled once, after them)."""

    partition: int
    kind: type[ByUserMsg]
    events: list[Any] = field(default_factory=list)  # Faust events, in offset order
    parsed: list[ByUserMsg] = field(default_factory=list)
    tick: bool = False

    @property
    def messages(self) -> list[Any]:
        return [e.message for e in self.events]


def runs(taken: list[tuple[Any, ByUserMsg]]) -> list[Run]:
    """Group a take of (event, parsed message) by partition, merging consecutive messages of the same kind: a user
    touched by several engagement messages is then read and written once. Order within a partition is kept, except
    that a tick does not split a run: it is driven by the clock, not by the data, so it is handled after the run
    (ticks come several times a second and would otherwise leave nothing to merge)."""
    out: dict[int, list[Run]] = {}
    for event, parsed in taken:
        q = event.message.partition
        mine = out.setdefault(q, [])
        is_tick = isinstance(parsed, TickMsg)
        if not mine or (mine[-1].kind is not type(parsed) and not is_tick):
            mine.append(Run(q, type(parsed)))
        run = mine[-1]
        run.events.append(event)
        if is_tick:
            run.tick = True
        else:
            run.parsed.append(parsed)
    return [run for q in sorted(out) for run in out[q]]


def stage_step(w: Wiring, run: Run) -> Outputs:
    """One run through the profile stage. Table writes land in the changelog partition of Faust's current event, so
    the current event is set to the run's last one: the stage writes only keys of that partition."""
    _current_event.set(weakref.ref(run.events[-1]))
    if run.kind is EngagementsMsg:
        out = w.stage.on_engagements(run.partition, [e for m in run.parsed for e in m.engagements()])  # type: ignore[union-attr]
    elif run.kind is FeaturesMsg:
        out = w.stage.on_features(run.partition, [u for m in run.parsed for u in m.updates()])  # type: ignore[union-attr]
    else:
        out = Outputs()
    if run.tick:  # several ticks in a run: one is enough
        out.extend(w.stage.on_tick(run.partition))
    return out


def update_profiles(w: Wiring) -> None:
    """The by-user partitions through the profile stage (mmfeat.profile's rule, as the offline path), in takes of up
    to ``profiles_take_max`` messages: the batch grows by itself when the stage falls behind, which is when
    merging pays (a user's state read and written once for many engagements)."""
    p = w.s.profiles

    async def forget(sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Partitions moved: what this process cached of the tables may be someone else's now, or stale."""
        w.stage.forget()

    w.app.on_partitions_revoked.connect(forget)
    w.app.on_partitions_assigned.connect(forget)

    @w.app.agent(w.topics.by_user, name="update_profiles")
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(p.profiles_take_max, within=p.profiles_batch_window_s):
            taken: list[tuple[Any, ByUserMsg]] = []
            for event in events:

                async def read(event: Any = event, taken: list[tuple[Any, ByUserMsg]] = taken) -> None:
                    taken.append((event, read_by_user(event.message.value)))

                await w.guard([event.message], read)
            for run in runs(taken):

                async def step(run: Run = run) -> None:
                    await w.send(stage_step(w, run))

                await w.guard(run.messages, step)


def send_ticks(w: Wiring) -> None:
    """One tick per user partition, often enough for the emit interval and the waiting TTL: both run inside the
    partition that owns the state, as Faust's changelogs need."""
    p = w.s.profiles
    interval = min(p.pending_tick_s, p.profile_emit_interval_s / 4) if p.profile_emit_interval_s > 0 else p.pending_tick_s

    @w.app.timer(interval=max(0.05, interval))
    async def ticks() -> None:
        for q in range(p.profiles_partitions):
            await w.topics.by_user.send(key=None, value=encode(TickMsg()), partition=q)


AGENTS = (ingest_features, update_profiles, send_ticks)
__all__ = ["AGENTS", "ItemTokens", "Topics", "Wiring"]
