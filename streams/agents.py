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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust

from mmfeat.dlq import dead_letter
from mmfeat.engagements import EngagementRules
from mmfeat.errors import InfraError, RecordError, RecordRef, SchemaError, as_record_error
from mmfeat.features import item_features
from mmfeat.metrics import ProfileMetrics
from mmfeat.schemas import H_REASON, encode_record, peek_item_id
from mmfeat.settings import Settings
from mmfeat.untrusted import clean
from streams.records import EngagementsMsg, FeaturesMsg, TickMsg, encode, read_by_user
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

    async def guard(self, msg: Any, step: Callable[[], Awaitable[None]]) -> bool:
        """Run one record's step; a failure about the record becomes its DLQ record. Returns whether it succeeded."""
        try:
            await step()
            return True
        except InfraError as e:  # not this record's fault: stop, with one line, and let the supervisor restart us
            log.error("profiles app stopping: %s", clean(e, 500))
            await self.app.crash(e)
            raise
        except Exception as e:  # the boundary
            ref = RecordRef(msg.topic, msg.partition, msg.offset, peek_item_id(msg.value))
            await self.to_dlq(ref, as_record_error(e), msg.key, msg.value)
            return False

    async def send(self, out: Outputs, source: RecordRef) -> None:
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
        for e, err in out.failed:
            raw = encode(EngagementsMsg.of([e]))
            await self.to_dlq(RecordRef(source.topic, source.partition, source.offset, e.item_id), err, e.user_id.encode(), raw)
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
                    tokens, lineage = item_features(msg.value, w.s.profiles.profile_tokenizer)
                    items.append((item_id, tokens, lineage))

                await w.guard(msg, read)
            if items:
                value = encode(FeaturesMsg(items=items))
                for q in range(p.profiles_partitions):
                    await w.topics.by_user.send(key=None, value=value, partition=q)


def update_profiles(w: Wiring) -> None:
    """Each message of a user partition through the profile stage (mmfeat.profile's rule, as the offline path)."""

    held: frozenset[Any] = frozenset()

    @w.app.agent(w.topics.by_user, name="update_profiles")
    async def agent(stream: Any) -> None:
        nonlocal held
        async for event in stream.events():
            msg = event.message
            now_held = frozenset(w.app.consumer.assignment())
            if now_held != held:  # a rebalance: what this process cached of the tables may be someone else's now
                w.stage.forget()
                held = now_held

            async def step(msg: Any = msg) -> None:
                m = read_by_user(msg.value)
                if isinstance(m, EngagementsMsg):
                    out = w.stage.on_engagements(msg.partition, m.engagements())
                elif isinstance(m, FeaturesMsg):
                    out = w.stage.on_features(msg.partition, m.updates())
                else:
                    out = w.stage.on_tick(msg.partition)
                await w.send(out, RecordRef(msg.topic, msg.partition, msg.offset))

            await w.guard(msg, step)


def send_ticks(w: Wiring) -> None:
    """One tick per user partition, often enough for the emit interval and the waiting TTL: both run inside the
    partition that owns the state, as Faust's changelogs need."""
    p = w.s.profiles
    interval = min(p.pending_tick_s, p.profile_emit_interval_s / 2) if p.profile_emit_interval_s > 0 else p.pending_tick_s

    @w.app.timer(interval=max(0.05, interval))
    async def ticks() -> None:
        for q in range(p.profiles_partitions):
            await w.topics.by_user.send(key=None, value=encode(TickMsg()), partition=q)


AGENTS = (ingest_features, update_profiles, send_ticks)
__all__ = ["AGENTS", "ItemTokens", "Topics", "Wiring"]
