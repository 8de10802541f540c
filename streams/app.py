"""The Faust app: engagements + item features -> per-user interest profiles (user.profiles.v1).

    engagements ─streams/ingest.py─► <app>-by-user (one message per user partition per micro-batch; not Faust)
    media.item-features.v1 ─ingest_features─► <app>-by-user (broadcast to every partition)
    <app>-by-user ─update_profiles─► ProfileStage (streams/stage.py): join, waiting, mmfeat.profile's rule
                                 ─► tables users / items / index ─► user.profiles.v1 (coalesced), GET /profiles/{id}

One repartition: engagements are re-keyed by user through a topic of our own, so an engagement meets its
user's state whatever partitioner its producer used, and each incarnation of the ingesting agent sends a
user's engagements of one source partition in offset order (what the offsets-based dedupe needs). Item
features are broadcast to every user partition, so the join needs no second hop. Offsets are committed after
the sends and changelog writes are flushed (Faust's at-least-once); double counting after a crash is
prevented by the state's per-partition offsets, not by Faust's exactly-once setting (docs/profiles.md).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from typing import Any

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST

from mmfeat.errors import ConfigError
from mmfeat.kafka.client import ensure_topics
from mmfeat.kafka.config import faust_credentials
from mmfeat.metrics import ProfileMetrics
from mmfeat.schemas import ITEM_ID_PATTERN, encode_record
from mmfeat.settings import Settings
from mmfeat.topics import TABLES, app_topics, internal_topics
from mmfeat.untrusted import install_log_escaping
from streams.agents import AGENTS, Topics, Wiring
from streams.ingest import Ingest
from streams.records import UserPartitions
from streams.rules import engagement_rules, stage_config
from streams.stage import ProfileStage

PRODUCER_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MB)

log = logging.getLogger("mmfeat.profiles")


def make_app(settings: Settings) -> faust.App:
    """Build the app for these settings (bootstrap servers resolved). Tests and the bench build it too."""
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        raise ConfigError("the profiles app needs bootstrap servers (run `mmfeat up` or set MMFEAT_BOOTSTRAP_SERVERS)")
    s = settings
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
        table_standby_replicas=s.profiles.profiles_standby_replicas,
        broker_session_timeout=s.profiles.profiles_session_timeout_s,
        broker_heartbeat_interval=s.profiles.profiles_session_timeout_s / 10,
        # aiokafka appends to a partition's next batch only once the current one is acknowledged: with its default
        # 16 KB batches and user records of several KB, the changelogs were sent two records per broker round trip
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_linger_ms=5,
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
        by_user=app.topic(names["by_user"], partitions=p, **raw),
    )
    # Faust opens one RocksDB per table partition, each by default with a 2 GB block cache and up to 3 x 64 MB of
    # memtables: the app's memory then grows with the writes for an hour (the soak saw +40% in 25 minutes). Bounded:
    # a worker holds at most tables x partitions x (2 memtables + cache).
    rocks = {
        "write_buffer_size": s.profiles.profiles_rocksdb_write_buffer_mb << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": s.profiles.profiles_rocksdb_block_cache_mb << 20,
    }
    tables = {
        name: app.Table(name, default=None, partitions=p, key_type=bytes, value_type=bytes, options=dict(rocks)) for name in TABLES
    }  # raw bytes: keys as the topic keys, values in streams/state.py's encoding
    users = UserPartitions(p)
    stage = ProfileStage(tables["profiles"], tables["items"], tables["index"], stage_config(s), time.time, partition_of=users)
    w = Wiring(app, s, engagement_rules(s), stage, topics, tables["profiles"], ProfileMetrics())
    for build in (*AGENTS, sample_lag, lookup, ingest):
        build(w)
    return app


def ingest(w: Wiring) -> None:
    """The first stage (streams/ingest.py) runs in a thread of this process while the app runs; if it stops on an
    infrastructure error, the app stops too, with one line."""
    stage = Ingest(w.s, w.rules, UserPartitions(w.s.profiles.profiles_partitions), w.metrics)

    @w.app.task
    async def run_ingest() -> None:
        stage.start()
        while stage.thread.is_alive():
            await asyncio.sleep(0.5)
        if stage.error is not None:
            await w.app.crash(stage.error)

    async def stop_ingest(app: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, stage.stop)

    w.app.on_before_shutdown.connect(stop_ingest)  # type: ignore[arg-type]  # mode types the receiver as positional-only


def sample_lag(w: Wiring) -> None:
    """Consumer lag of the app's input partitions held by this worker; /metrics serves it."""
    app, names = w.app, internal_topics(w.s)
    inputs = {w.s.topics.features_topic, names["by_user"]}  # the engagements topic's lag: the ingest group's (librdkafka)

    @app.timer(interval=w.s.metrics.metrics_interval_s)
    async def sample() -> None:
        for tp in app.consumer.assignment():
            if tp.topic in inputs:
                position = await app.consumer.position(tp)
                highwater = app.consumer.highwater(tp)
                if position is not None and highwater is not None:
                    w.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    @app.page("/metrics")
    async def get_metrics(web: View, request: Request) -> Response:
        return web.bytes(w.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})  # no charset: aiohttp refuses it


def lookup(w: Wiring) -> None:
    """GET /profiles/{user_id}: the profile from the current state (not the coalesced topic), answered by the worker
    that owns the user (Faust's table routing); 503 while the app starts or rebalances."""
    app, names = w.app, internal_topics(w.s)

    @app.task
    async def warm_lookup_routing() -> None:
        """table_route hashes keys with the producer's metadata of the changelog topic; fetch it now, or a
        lookup after a restart with nothing to write yet fails (the producer has never seen that topic)."""
        producer = await app.maybe_start_producer()
        await producer._ensure_producer().partitions_for(names["profiles"])

    token = w.s.profiles.profiles_lookup_token

    @app.page("/profiles/{user_id}")
    async def get_profile(web: View, request: Request, user_id: str) -> Response:
        if token is not None and not bearer_ok(request.headers.get("Authorization"), token.get_secret_value()):
            return web.json({"error": "a bearer token is required (Authorization: Bearer <token>)"}, status=401,
                            headers={"WWW-Authenticate": 'Bearer realm="mmfeat-profiles"'})  # fmt: skip
        if not re.fullmatch(ITEM_ID_PATTERN, user_id):
            return web.json({"error": f"malformed user id {user_id!r}: 1-128 characters of [A-Za-z0-9._:-]"}, status=400)
        try:  # the worker that owns the user's partition answers; with one worker that is always this one
            return await app.router.route_req(w.profiles.name, user_id, web.web, request)
        except SameNode:
            pass
        except (ServiceUnavailable, TypeError, KeyError):  # no assignment or no topic metadata yet
            return web.json({"error": "the profiles app is starting or rebalancing; retry"}, status=503)
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as e:  # the owner died or is stopping
            log.warning("lookup of %r: the owning worker did not answer (%s)", user_id, e)
            return web.json({"error": "the worker that owns this user did not answer; retry"}, status=503)
        got = w.stage.user(user_id)
        if got is None or got.state.applied == 0:  # admitted engagements still waiting for their items are not a profile yet
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        return web.bytes(encode_record(w.stage.record(got.state)), content_type="application/json")


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries exactly this bearer token (compared in constant time)."""
    if header is None or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode("utf-8", "surrogateescape"), token.encode())


def run(settings: Settings, *, loglevel: str = "warning") -> None:
    """Create the topics and run the app until SIGTERM/SIGINT (the `mmfeat profiles` command)."""
    install_log_escaping()
    ensure_topics(settings, app_topics(settings))  # also the first connection: refused credentials stop here, in one line
    app = make_app(settings)
    logging.getLogger("mmfeat").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None  # its terminal control codes end up in log files
    p = settings.profiles
    if p.profiles_lookup_token is None and p.profiles_web_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("profiles: the lookup listens on %s with no token: set MMFEAT_PROFILES_LOOKUP_TOKEN", p.profiles_web_host)
    log.warning(
        "profiles: %s + %s -> %s, lookup http://%s:%d/profiles/{user_id}",
        settings.topics.engagements_topic, settings.topics.features_topic, settings.topics.profiles_topic,
        settings.profiles.profiles_web_host, settings.profiles.profiles_web_port,
    )  # fmt: skip
    worker.execute_from_commandline()
