"""The profiles app's agents, one builder each (faust's own examples' shape), over a shared ``Stage``.

Every agent reads raw bytes and handles each record inside one boundary (``Stage.guard``): any exception
about that record becomes its DLQ record on ``engagements.dlq`` (``internal_error`` with the exception class
when nothing more specific applies) and the agent moves on; only infrastructure errors (``InfraError``)
leave it. A record's outputs are computed before any of them is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from mmfeat.dlq import dead_letter
from mmfeat.engagements import Engagement, EngagementRules
from mmfeat.errors import RecordError, RecordRef, SchemaError, as_record_error
from mmfeat.features import item_features
from mmfeat.metrics import ProfileMetrics
from mmfeat.profile import ProfileConfig, ProfileState, apply_engagement, profile_record
from mmfeat.schemas import H_REASON, UnmatchedEngagementV1, encode_record, now_utc, peek_item_id
from mmfeat.settings import Settings
from mmfeat.untrusted import clean
from streams.join import ItemJoin, JoinResult, LoadGate
from streams.pending import Entry
from streams.records import ByUserMsg, DeletedMsg, EngagementData, EngagementMsg, FeaturesMsg, TickMsg, encode, read_by_item, read_by_user

log = logging.getLogger("mmfeat.profiles")


@dataclass
class Topics:
    engagements: Any
    features: Any
    profiles: Any
    dlq: Any
    unmatched: Any
    by_item: Any
    by_user: Any


@dataclass
class Stage:
    """What every agent shares: settings, the pure rules, topics, tables, metrics."""

    s: Settings
    cfg: ProfileConfig
    rules: EngagementRules
    topics: Topics
    profiles: Any  # the profiles table
    join: ItemJoin
    gate: LoadGate
    metrics: ProfileMetrics

    async def to_dlq(self, ref: RecordRef, err: RecordError, key: bytes | None, value: bytes | None) -> None:
        letter = dead_letter(ref, err, key, value)
        await self.topics.dlq.send(key=key, value=letter.value, headers=letter.headers)
        self.metrics.dlq.labels(letter.reason).inc()
        self.metrics.records_out.labels(self.s.topics.engagements_dlq_topic).inc()

    async def guard(self, event: Any, step: Callable[[Any], Awaitable[None]]) -> None:
        """Run one record's step; any failure about the record becomes its DLQ record."""
        msg = event.message
        try:
            await step(msg)
        except Exception as e:  # the boundary: as_record_error re-raises InfraError
            ref = RecordRef(msg.topic, msg.partition, msg.offset, peek_item_id(msg.value))
            await self.to_dlq(ref, as_record_error(e), msg.key, msg.value)

    async def release(self, result: JoinResult) -> None:
        """Send what a join step released: ready engagements to the profile stage, given-up ones to unmatched."""
        ready = [(e.user_id.encode(), encode(ByUserMsg(e=EngagementData.of(e), tokens=t, lineage=self.join.lineage(e.item_id))))
                 for e, t in result.ready]  # fmt: skip
        gone = [(reason, unmatched_record(reason, entry)) for reason, entry in result.unmatched]
        for key, value in ready:
            await self.topics.by_user.send(key=key, value=value)
        for reason, rec in gone:
            log.warning("unmatched %s user=%s item=%s: %s", clean(rec.engagement_id), rec.user_id, rec.item_id, reason)
            headers = [(H_REASON, reason.encode())]
            await self.topics.unmatched.send(key=rec.user_id.encode(), value=encode_record(rec), headers=headers)
            self.metrics.unmatched.labels(reason).inc()
            self.metrics.records_out.labels(self.s.topics.unmatched_topic).inc()


def unmatched_record(reason: str, entry: Entry) -> UnmatchedEngagementV1:
    e = Engagement.from_dict(entry["e"])
    return UnmatchedEngagementV1(
        reason=reason,  # type: ignore[arg-type]  # one of the two literals, from streams.join
        engagement_id=e.id, user_id=e.user_id, item_id=e.item_id, event=e.event, value=e.value,
        ts=datetime.fromtimestamp(e.ts, UTC), queued_at=datetime.fromtimestamp(entry["queued_at"], UTC), dropped_at=now_utc(),
    )  # fmt: skip


def ingest_engagements(app: faust.App, st: Stage) -> None:
    """Validate engagements, route bad ones to the DLQ, re-key the good ones by item."""

    async def step(msg: Any) -> None:
        e = st.rules.parse(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset, timestamp_s=msg.timestamp)
        await st.topics.by_item.send(key=e.item_id.encode(), value=encode(EngagementMsg(e=EngagementData.of(e))))

    @app.agent(st.topics.engagements, name="ingest_engagements")
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            st.metrics.records_in.labels(event.message.topic).inc()
            await st.guard(event, step)


def ingest_features(app: faust.App, st: Stage) -> None:
    """Keep only the profile tokenizer's ids of each feature record, re-keyed by item. Every record counts as
    read for the features-first gate, whatever became of it (a DLQ'd record at a partition's end must not
    keep the gate shut)."""

    async def step(msg: Any) -> None:
        item_id = (msg.key or b"").decode("utf-8", "replace")
        if not item_id:
            raise SchemaError("feature record without a key (item_id)")
        if msg.value is None:
            await st.topics.by_item.send(key=msg.key, value=encode(DeletedMsg(item_id=item_id)))
            return
        tokens, lineage = item_features(msg.value, st.s.profiles.profile_tokenizer)
        await st.topics.by_item.send(key=msg.key, value=encode(FeaturesMsg(item_id=item_id, tokens=tokens, lineage=lineage)))

    @app.agent(st.topics.features, name="ingest_features")
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            st.metrics.records_in.labels(msg.topic).inc()
            try:
                await st.guard(event, step)
            finally:
                st.gate.processed(msg.partition, msg.offset)


def join_items(app: faust.App, st: Stage) -> None:
    """The engagement x item-features join (streams/join.py), in the partition that owns the item."""

    async def step(msg: Any) -> None:
        m, part, now = read_by_item(msg.value), msg.partition, time.time()
        if isinstance(m, EngagementMsg):
            await st.release(st.join.on_engagement(m.e.engagement(), part, now))
        elif isinstance(m, FeaturesMsg):
            await st.release(st.join.on_features(m.item_id, list(m.tokens), part, now, m.lineage))
        elif isinstance(m, DeletedMsg):
            st.join.on_item_deleted(m.item_id)
        elif isinstance(m, TickMsg):
            await st.release(st.join.on_tick(part, now))

    @app.agent(st.topics.by_item, name="join_items")
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await st.guard(event, step)


def update_profiles(app: faust.App, st: Stage) -> None:
    """Apply each joined engagement to its user's profile (mmfeat.profile, the offline path's rule) and publish it."""

    async def step(msg: Any) -> None:
        m = read_by_user(msg.value)
        e = m.e.engagement()
        got = st.profiles.get(e.user_id)
        state, changed = apply_engagement(ProfileState.from_dict(got) if got else None, e, m.tokens, st.cfg, m.lineage)
        rec = encode_record(
            profile_record(state, st.cfg, tokenizer=st.s.profiles.profile_tokenizer, features_topic=st.s.topics.features_topic)
        )
        # Written back even when nothing changed (a redelivered engagement): the local store may hold an
        # update whose changelog record died with the previous process; writing again re-sends it.
        st.profiles[e.user_id] = state.to_dict()
        await st.topics.profiles.send(key=e.user_id.encode(), value=rec)
        st.metrics.records_out.labels(st.s.topics.profiles_topic).inc()
        st.metrics.freshness.observe(max(0.0, time.time() - e.ts))
        if not changed:
            log.info("engagement %s already applied to user %s: not counted again", clean(e.id), e.user_id)

    @app.agent(st.topics.by_user, name="update_profiles")
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await st.guard(event, step)


AGENTS = (ingest_engagements, ingest_features, join_items, update_profiles)
