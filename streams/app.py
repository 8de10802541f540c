"""The Faust app: engagements + item features -> per-user interest profiles (user.profiles.v1).

    engagements ──validate──► <app>-by-item (key item_id) ◄── media.item-features.v1 (tokens only)
                                   │ join: items / pending / pending-index tables (streams/join.py)
                                   ▼
                              <app>-by-user (key user_id) ──apply_engagement──► profiles table
                                                                           └──► user.profiles.v1, GET /profiles/{id}

Both inputs are re-keyed through topics of our own (``by-item``) so that features and engagements
of an item meet in the same partition whatever partitioner their producers used. Bad engagements go
to the DLQ topic; engagements that waited too long or found the buffer full go to the unmatched
topic. Offsets are committed after the attached sends and changelog writes are flushed (Faust's
at-least-once); double counting after a crash is prevented by the profile's engagement-id set, not
by Faust's exactly-once setting (see docs/profiles.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST

from mmfeat.engagements import Engagement, parse_engagement
from mmfeat.errors import ConfigError, RecordError, RecordRef, SchemaError
from mmfeat.features import item_features
from mmfeat.kafka.client import TopicSpec, committed_offsets, ensure_topics
from mmfeat.metrics import ProfileMetrics
from mmfeat.profile import ProfileConfig, ProfileState, apply_engagement, profile_record
from mmfeat.schemas import H_REASON, H_SOURCE, ITEM_ID_PATTERN, UnmatchedEngagementV1, dlq_record, now_utc, peek_item_id
from mmfeat.settings import Settings
from streams.join import ItemJoin, JoinResult, LoadGate
from streams.pending import Entry

log = logging.getLogger("mmfeat.profiles")
TABLES = ("items", "pending", "pending-index", "profiles")


def profile_config(settings: Settings) -> ProfileConfig:
    return ProfileConfig(
        event_weights=dict(settings.event_weights),
        half_life_s=settings.half_life_s,
        top_k=settings.profile_top_k,
        dedupe_horizon_s=settings.dedupe_horizon_s,
        max_tokens=settings.profile_max_tokens,
    )


def internal_topics(settings: Settings) -> dict[str, str]:
    app_id = settings.profiles_app_id
    names = {"by_item": f"{app_id}-by-item", "by_user": f"{app_id}-by-user", "leader": f"{app_id}-__assignor-__leader"}
    names.update({t: f"{app_id}-{t}-changelog" for t in TABLES})
    return names


def app_topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the app reads or writes; created up front (the app does not declare topics itself)."""
    p = settings.profiles_partitions
    names = internal_topics(settings)
    return [
        TopicSpec(settings.engagements_topic, p),
        TopicSpec(settings.features_topic, p, compacted=True),
        TopicSpec(settings.profiles_topic, p, compacted=True),
        TopicSpec(settings.engagements_dlq_topic, p),
        TopicSpec(settings.unmatched_topic, p),
        TopicSpec(names["by_item"], p),
        TopicSpec(names["by_user"], p),
        TopicSpec(names["leader"], 1),  # Faust's leader election topic
        *(TopicSpec(names[t], p, compacted=True) for t in TABLES),
    ]


def _unmatched(reason: str, entry: Entry) -> UnmatchedEngagementV1:
    e = Engagement.from_dict(entry["e"])
    return UnmatchedEngagementV1(
        reason=reason,  # type: ignore[arg-type]  # one of the two literals, from streams.join
        engagement_id=e.id,
        user_id=e.user_id,
        item_id=e.item_id,
        event=e.event,
        value=e.value,
        ts=datetime.fromtimestamp(e.ts, UTC),
        queued_at=datetime.fromtimestamp(entry["queued_at"], UTC),
        dropped_at=now_utc(),
    )


def make_app(settings: Settings) -> faust.App:
    """Build the app for these settings (bootstrap servers resolved). Tests and the bench build it too."""
    bootstrap = settings.bootstrap_servers
    if not bootstrap:
        raise ConfigError("the profiles app needs bootstrap servers (run `mmfeat up` or set MMFEAT_BOOTSTRAP_SERVERS)")
    s = settings
    cfg = profile_config(s)
    p = s.profiles_partitions
    names = internal_topics(s)
    s.profiles_state.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last folder
    app = faust.App(
        s.profiles_app_id,
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(s.profiles_state),
        topic_partitions=p,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_commit_interval=s.profiles_commit_s,
        table_standby_replicas=0,
        web_bind=s.profiles_web_host,
        web_host=s.profiles_web_host,
        web_port=s.profiles_web_port,
        autodiscover=False,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    engagements = app.topic(s.engagements_topic, partitions=p, **raw)
    features = app.topic(s.features_topic, partitions=p, **raw)
    profiles_out = app.topic(s.profiles_topic, partitions=p, **raw)
    dlq = app.topic(s.engagements_dlq_topic, partitions=p, **raw)
    unmatched = app.topic(s.unmatched_topic, partitions=p, **raw)
    by_item = app.topic(names["by_item"], partitions=p, key_serializer="raw", value_serializer="json")
    by_user = app.topic(names["by_user"], partitions=p, key_serializer="raw", value_serializer="json")

    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=p, key_type=bytes)  # raw keys: the same bytes as the topic keys

    items, pending, pending_index, profiles = (table(t) for t in TABLES)
    metrics = ProfileMetrics()
    inputs = {s.engagements_topic, s.features_topic, names["by_item"], names["by_user"]}
    join = ItemJoin(items, pending, pending_index, cap=s.pending_max_per_item, ttl_s=s.pending_ttl_s)
    gate = LoadGate()

    async def _release(result: JoinResult) -> None:
        for e, tokens in result.ready:
            value = {"e": e.to_dict(), "tokens": tokens, "lineage": join.lineage(e.item_id)}
            await by_user.send(key=e.user_id.encode(), value=value)
        for reason, entry in result.unmatched:
            rec = _unmatched(reason, entry)
            log.warning("unmatched %s user=%s item=%s: %s", rec.engagement_id, rec.user_id, rec.item_id, reason)
            await unmatched.send(key=rec.user_id.encode(), value=rec.model_dump_json().encode(), headers=[(H_REASON, reason.encode())])
            metrics.unmatched.labels(reason).inc()
            metrics.records_out.labels(s.unmatched_topic).inc()

    async def _to_dlq(ref: RecordRef, err: RecordError, msg: Any) -> None:
        log.warning("DLQ %s: %s: %s", ref, err.reason, err)
        rec = dlq_record(ref, err, msg.key, msg.value)
        headers = [(H_SOURCE, str(ref).encode()), (H_REASON, err.reason.encode())]
        await dlq.send(key=msg.key, value=rec.model_dump_json().encode(), headers=headers)
        metrics.dlq.labels(err.reason).inc()
        metrics.records_out.labels(s.engagements_dlq_topic).inc()

    @app.agent(engagements)
    async def ingest_engagements(stream: Any) -> None:
        """Validate, route bad records to the DLQ, re-key the good ones by item."""
        async for event in stream.events():
            msg = event.message
            metrics.records_in.labels(msg.topic).inc()
            ref = RecordRef(msg.topic, msg.partition, msg.offset, peek_item_id(msg.value))
            try:
                e = parse_engagement(
                    msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset, timestamp_s=msg.timestamp,
                    event_weights=cfg.event_weights, max_future_s=s.max_future_s,
                )  # fmt: skip
            except RecordError as err:
                await _to_dlq(ref, err, msg)
                continue
            await by_item.send(key=e.item_id.encode(), value={"kind": "engagement", "e": e.to_dict()})

    @app.agent(features)
    async def ingest_features(stream: Any) -> None:
        """Keep only the profile tokenizer's ids of each feature record, re-keyed by item."""
        async for event in stream.events():
            msg = event.message
            metrics.records_in.labels(msg.topic).inc()
            item_id = (msg.key or b"").decode("utf-8", "replace")
            if not item_id:
                ref = RecordRef(msg.topic, msg.partition, msg.offset)
                await _to_dlq(ref, SchemaError("feature record without a key (item_id)"), msg)
                continue
            if msg.value is None:
                await by_item.send(key=msg.key, value={"kind": "deleted", "item_id": item_id})
                continue
            ref = RecordRef(msg.topic, msg.partition, msg.offset, item_id)
            try:
                tokens, lineage = item_features(msg.value, s.profile_tokenizer)
            except RecordError as err:
                await _to_dlq(ref, err, msg)
                continue
            await by_item.send(key=msg.key, value={"kind": "features", "item_id": item_id, "tokens": tokens, "lineage": lineage})
            gate.processed(msg.partition, msg.offset)

    @app.agent(by_item)
    async def join_items(stream: Any) -> None:
        async for event in stream.events():
            v, part, now = event.value, event.message.partition, time.time()
            kind = v.get("kind")
            if kind == "engagement":
                await _release(join.on_engagement(Engagement.from_dict(v["e"]), part, now))
            elif kind == "features":
                await _release(join.on_features(v["item_id"], list(v["tokens"]), part, now, v.get("lineage")))
            elif kind == "deleted":
                join.on_item_deleted(v["item_id"])
            elif kind == "tick":
                await _release(join.on_tick(part, now))

    @app.agent(by_user)
    async def update_profiles(stream: Any) -> None:
        async for event in stream.events():
            e = Engagement.from_dict(event.value["e"])
            got = profiles.get(e.user_id)
            state, changed = apply_engagement(
                ProfileState.from_dict(got) if got else None, e, event.value["tokens"], cfg, event.value.get("lineage")
            )
            # Written back even when nothing changed (a redelivered engagement): the local store may hold an
            # update whose changelog record died with the previous process; writing again re-sends it.
            profiles[e.user_id] = state.to_dict()
            rec = profile_record(state, cfg, tokenizer=s.profile_tokenizer, features_topic=s.features_topic)
            await profiles_out.send(key=e.user_id.encode(), value=rec.model_dump_json().encode())
            metrics.records_out.labels(s.profiles_topic).inc()
            metrics.freshness.observe(max(0.0, time.time() - e.ts))
            if not changed:
                log.info("engagement %s already applied to user %s: not counted again", e.id, e.user_id)

    @app.timer(interval=s.pending_tick_s)
    async def tick() -> None:
        """One tick per partition of by-item: expiry runs inside the partition that owns the entries."""
        for part in range(p):
            await by_item.send(key=None, value={"kind": "tick"}, partition=part)

    @app.task
    async def load_features_first() -> None:
        """Hold the engagement partitions until this worker's features partitions are read to their end at
        assignment (or the timeout). Paused partitions are not fetched at all: an agent that stopped reading
        would keep its buffered records unacknowledged, and Faust waits for those before it rebalances."""
        began = time.monotonic()
        while not app.consumer.assignment():
            await asyncio.sleep(0.1)
        app.consumer.pause_partitions([tp for tp in app.consumer.assignment() if tp.topic == s.engagements_topic])
        tps = [tp for tp in app.consumer.assignment() if tp.topic == s.features_topic]
        ends = await app.consumer.highwaters(*tps) if tps else {}
        # where reading starts: the group's committed offsets (the consumer's own position is its fetch position)
        loop = asyncio.get_running_loop()
        starts = await loop.run_in_executor(None, committed_offsets, s, s.profiles_app_id, s.features_topic, [tp.partition for tp in tps])
        gate.start()  # a worker holding no features partition has nothing to wait for
        for tp in tps:
            gate.watch(tp.partition, int(ends.get(tp) or 0), starts.get(tp.partition, 0))
        while not gate.is_open() and time.monotonic() - began < s.features_first_timeout_s:
            await asyncio.sleep(0.05)
        if gate.is_open():
            log.warning("features read to offsets %s in %.1fs: engagements start", gate.targets, time.monotonic() - began)
        else:
            waited, left = s.features_first_timeout_s, gate.remaining()
            log.warning("features not loaded after %.0fs (%d record(s) to go): engagements start anyway", waited, left)
        app.consumer.resume_partitions([tp for tp in app.consumer.assignment() if tp.topic == s.engagements_topic])

    @app.timer(interval=s.metrics_interval_s)
    async def sample_lag() -> None:
        """Consumer lag of the app's input partitions held by this worker."""
        for tp in app.consumer.assignment():
            if tp.topic in inputs:
                position = await app.consumer.position(tp)
                highwater = app.consumer.highwater(tp)
                if position is not None and highwater is not None:
                    metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    @app.page("/metrics")
    async def get_metrics(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})  # aiohttp refuses a charset in content_type

    @app.task
    async def warm_lookup_routing() -> None:
        """table_route hashes keys with the producer's metadata of the changelog topic; fetch it now, or a
        lookup after a restart with nothing to write yet fails (the producer has never seen that topic)."""
        producer = await app.maybe_start_producer()
        await producer._ensure_producer().partitions_for(names["profiles"])

    @app.page("/profiles/{user_id}")
    async def get_profile(web: View, request: Request, user_id: str) -> Response:
        if not re.fullmatch(ITEM_ID_PATTERN, user_id):
            return web.json({"error": f"malformed user id {user_id!r}: 1-128 characters of [A-Za-z0-9._:-]"}, status=400)
        try:  # the worker that owns the user's partition answers; with one worker that is always this one
            return await app.router.route_req(profiles.name, user_id, web.web, request)
        except SameNode:
            pass
        except (ServiceUnavailable, TypeError, KeyError):  # no assignment or no topic metadata yet
            return web.json({"error": "the profiles app is starting or rebalancing; retry"}, status=503)
        got = profiles.get(user_id)
        if got is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        rec = profile_record(ProfileState.from_dict(got), cfg, tokenizer=s.profile_tokenizer, features_topic=s.features_topic)
        return web.json(rec.model_dump(mode="json"))

    return app


def run(settings: Settings, *, loglevel: str = "warning") -> None:
    """Create the topics and run the app until SIGTERM/SIGINT (the `mmfeat profiles` command)."""
    ensure_topics(settings, app_topic_specs(settings))
    app = make_app(settings)
    logging.getLogger("mmfeat").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None  # its terminal control codes end up in log files
    log.warning(
        "profiles: %s + %s -> %s, lookup http://%s:%d/profiles/{user_id}",
        settings.engagements_topic, settings.features_topic, settings.profiles_topic,
        settings.profiles_web_host, settings.profiles_web_port,
    )  # fmt: skip
    worker.execute_from_commandline()
