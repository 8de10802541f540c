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
from typing import Any

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST

from mmfeat.errors import ConfigError
from mmfeat.kafka.client import committed_offsets, ensure_topics
from mmfeat.kafka.config import faust_credentials
from mmfeat.metrics import ProfileMetrics
from mmfeat.profile import ProfileState, profile_record
from mmfeat.schemas import ITEM_ID_PATTERN, encode_record
from mmfeat.settings import Settings
from mmfeat.topics import TABLES, app_topics, internal_topics
from mmfeat.untrusted import install_log_escaping
from streams.agents import AGENTS, Stage, Topics
from streams.join import ItemJoin, LoadGate
from streams.records import TickMsg, encode
from streams.rules import engagement_rules, profile_config

log = logging.getLogger("mmfeat.profiles")


def make_app(settings: Settings) -> faust.App:
    """Build the app for these settings (bootstrap servers resolved). Tests and the bench build it too."""
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigError("the profiles app needs bootstrap servers (run `mmfeat up` or set MMFEAT_BOOTSTRAP_SERVERS)")
    s = settings
    cfg = profile_config(s)
    p = s.profiles.profiles_partitions
    names = internal_topics(s)
    s.profiles_state.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last folder
    app = faust.App(
        s.profiles.profiles_app_id,
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(s.profiles_state),
        topic_partitions=p,
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_commit_interval=s.profiles.profiles_commit_s,
        table_standby_replicas=0,
        web_bind=s.profiles.profiles_web_host,
        web_host=s.profiles.profiles_web_host,
        web_port=s.profiles.profiles_web_port,
        autodiscover=False,
        broker_credentials=faust_credentials(s),
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}  # every input is validated by us, internal ones too
    topics = Topics(
        engagements=app.topic(s.topics.engagements_topic, partitions=p, **raw),
        features=app.topic(s.topics.features_topic, partitions=p, **raw),
        profiles=app.topic(s.topics.profiles_topic, partitions=p, **raw),
        dlq=app.topic(s.topics.engagements_dlq_topic, partitions=p, **raw),
        unmatched=app.topic(s.topics.unmatched_topic, partitions=p, **raw),
        by_item=app.topic(names["by_item"], partitions=p, **raw),
        by_user=app.topic(names["by_user"], partitions=p, **raw),
    )

    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=p, key_type=bytes)  # raw keys: the same bytes as the topic keys

    items, pending, pending_index, profiles = (table(t) for t in TABLES)
    metrics = ProfileMetrics()
    join = ItemJoin(items, pending, pending_index, cap=s.profiles.pending_max_per_item, ttl_s=s.profiles.pending_ttl_s)
    gate = LoadGate()
    stage = Stage(s, cfg, engagement_rules(s), topics, profiles, join, gate, metrics)
    for build in AGENTS:
        build(app, stage)

    for extra in (tick, load_features_first, sample_lag, lookup):
        extra(app, stage, names)
    return app


def tick(app: faust.App, st: Stage, names: dict[str, str]) -> None:
    """One tick per partition of by-item: expiry runs inside the partition that owns the entries."""

    @app.timer(interval=st.s.profiles.pending_tick_s)
    async def send_ticks() -> None:
        for part in range(st.s.profiles.profiles_partitions):
            await st.topics.by_item.send(key=None, value=encode(TickMsg()), partition=part)


def load_features_first(app: faust.App, st: Stage, names: dict[str, str]) -> None:
    """Hold the engagement partitions until this worker's features partitions are read to their end at assignment (or
    the timeout). Paused partitions are not fetched at all: an agent that stopped reading would keep its buffered
    records unacknowledged, and Faust waits for those before it rebalances."""
    s, gate = st.s, st.gate
    engagements, features = s.topics.engagements_topic, s.topics.features_topic

    @app.task
    async def hold_engagements() -> None:
        began = time.monotonic()
        while not app.consumer.assignment():
            await asyncio.sleep(0.1)
        app.consumer.pause_partitions([tp for tp in app.consumer.assignment() if tp.topic == engagements])
        tps = [tp for tp in app.consumer.assignment() if tp.topic == features]
        ends = await app.consumer.highwaters(*tps) if tps else {}
        # where reading starts: the group's committed offsets (the consumer's own position is its fetch position)
        loop = asyncio.get_running_loop()
        app_id = s.profiles.profiles_app_id
        starts = await loop.run_in_executor(None, committed_offsets, s, app_id, features, [tp.partition for tp in tps])
        gate.start()  # a worker holding no features partition has nothing to wait for
        for tp in tps:
            gate.watch(tp.partition, int(ends.get(tp) or 0), starts.get(tp.partition, 0))
        while not gate.is_open() and time.monotonic() - began < s.profiles.features_first_timeout_s:
            await asyncio.sleep(0.05)
        if gate.is_open():
            log.warning("features read to offsets %s in %.1fs: engagements start", gate.targets, time.monotonic() - began)
        else:
            waited, left = s.profiles.features_first_timeout_s, gate.remaining()
            log.warning("features not loaded after %.0fs (%d record(s) to go): engagements start anyway", waited, left)
        app.consumer.resume_partitions([tp for tp in app.consumer.assignment() if tp.topic == engagements])


def sample_lag(app: faust.App, st: Stage, names: dict[str, str]) -> None:
    """Consumer lag of the app's input partitions held by this worker; /metrics serves it."""
    inputs = {st.s.topics.engagements_topic, st.s.topics.features_topic, names["by_item"], names["by_user"]}

    @app.timer(interval=st.s.metrics.metrics_interval_s)
    async def sample() -> None:
        for tp in app.consumer.assignment():
            if tp.topic in inputs:
                position = await app.consumer.position(tp)
                highwater = app.consumer.highwater(tp)
                if position is not None and highwater is not None:
                    st.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    @app.page("/metrics")
    async def get_metrics(web: View, request: Request) -> Response:
        return web.bytes(
            st.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )  # aiohttp refuses a charset in content_type


def lookup(app: faust.App, st: Stage, names: dict[str, str]) -> None:
    """GET /profiles/{user_id}: the profile from the current state, answered by the worker that owns the user."""
    s = st.s

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
            return await app.router.route_req(st.profiles.name, user_id, web.web, request)
        except SameNode:
            pass
        except (ServiceUnavailable, TypeError, KeyError):  # no assignment or no topic metadata yet
            return web.json({"error": "the profiles app is starting or rebalancing; retry"}, status=503)
        got = st.profiles.get(user_id)
        if got is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        rec = profile_record(
            ProfileState.from_dict(got), st.cfg, tokenizer=s.profiles.profile_tokenizer, features_topic=s.topics.features_topic
        )
        return web.bytes(encode_record(rec), content_type="application/json")


def run(settings: Settings, *, loglevel: str = "warning") -> None:
    """Create the topics and run the app until SIGTERM/SIGINT (the `mmfeat profiles` command)."""
    install_log_escaping()
    ensure_topics(settings, app_topics(settings))  # also the first connection: refused credentials stop here, in one line
    app = make_app(settings)
    logging.getLogger("mmfeat").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None  # its terminal control codes end up in log files
    log.warning(
        "profiles: %s + %s -> %s, lookup http://%s:%d/profiles/{user_id}",
        settings.topics.engagements_topic, settings.topics.features_topic, settings.topics.profiles_topic,
        settings.profiles.profiles_web_host, settings.profiles.profiles_web_port,
    )  # fmt: skip
    worker.execute_from_commandline()
