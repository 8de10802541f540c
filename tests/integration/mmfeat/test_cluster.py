"""A replicated cluster of three KRaft nodes (`mmfeat up --brokers 3`): a node SIGKILLed mid-stream loses nothing
and rejoins; caption workers of one group on one host, one SIGKILLed and one added, write what one worker writes."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmfeat.cli import services
from mmfeat.cli.produce import image_uploads, send_records, send_uploads
from mmfeat.kafka.client import OutRecord, ensure_topics, topic_size
from mmfeat.schemas import DlqRecordV1
from mmfeat.settings import Settings
from mmfeat.topics import app_topics, upload_topics
from streams.offline import recompute_profiles
from streams.rules import profile_config
from tests.integration.conftest import (
    Stack,
    committed_lag,
    profile_settings,
    records,
    run_cli,
    small_images,
    start_cli,
    upload_settings,
    wait_for,
)
from tests.integration.profiles import ProfilesApp, send_engagements, wait_converged

NODES = 3


@pytest.fixture(scope="module")
def cluster(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Three nodes of this module's own, beside the session's single broker; Triton is the session's."""
    port, controller = services.free_cluster_ports(NODES)
    s = stack.settings.updated(
        {
            "state_dir": tmp_path_factory.mktemp("cluster"),
            "kafka_brokers": NODES,
            "kafka_port": port,
            "kafka_controller_port": controller,
            "bootstrap_servers": None,
        }
    )
    services.up(s, kafka=True, triton=False, log=print)
    try:
        yield s  # unresolved: `up` with these starts a node that stopped; clients resolve them (own_topics)
    finally:
        services.down(s, log=print)


def own_topics(cluster: Settings, tmp_path: Path, partitions: int = 4) -> Settings:
    """The caption worker's and the profiles app's topics of this test's own, on the cluster."""
    prefix = f"c{uuid.uuid4().hex[:10]}"
    s = profile_settings(upload_settings(services.resolve(cluster), prefix, tmp_path), prefix, tmp_path).updated({"batch_size": 4})
    ensure_topics(s, [*upload_topics(s, partitions), *app_topics(s)])
    return s


def partitions_of(s: Settings, prefix: str) -> list[services.PartitionStatus]:
    return [p for p in services.kafka_status(s)[1] if p.topic.startswith(prefix)]


def all_in_sync(s: Settings, prefix: str) -> bool:
    parts = partitions_of(s, prefix)
    return bool(parts) and all(len(p.isr) == NODES and p.leader >= 0 for p in parts)


def outcomes(s: Settings) -> tuple[dict[str, set[bytes]], dict[str, int]]:
    """Each feature key's distinct values, and how many DLQ records each item id has."""
    values: dict[str, set[bytes]] = {}
    for r in records(s, s.topics.features_topic):
        values.setdefault(r.key or "", set()).add(r.value or b"")
    dlq: dict[str, int] = {}
    for r in records(s, s.topics.dlq_topic):
        item = DlqRecordV1.model_validate_json(r.value or b"").item_id or ""
        dlq[item] = dlq.get(item, 0) + 1
    return values, dlq


def bad_uploads(s: Settings, tmp_path: Path, n: int, prefix: str) -> list[str]:
    """Uploads whose bytes are not a picture: each must end in the DLQ, once."""
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"{prefix}-{i}.png")
        paths[-1].write_bytes(b"\x89PNG not really " + bytes([i]))
    uploads = [u for u, _ in image_uploads(paths, inline=True, prefix=prefix)]
    send_uploads(s, iter(uploads))
    return [u.item_id for u in uploads]


def test_a_node_sigkilled_mid_stream_loses_nothing_and_rejoins(cluster: Settings, tmp_path: Path) -> None:
    nodes, _ = services.kafka_status(cluster)
    assert [(n.node_id, n.running, n.listening) for n in nodes] == [(1, True, True), (2, True, True), (3, True, True)]
    s = own_topics(cluster, tmp_path)
    prefix = s.topics.uploads_topic.split(".")[0]
    # a node's metadata learns of new topics a moment after they are created
    want: dict[str, int] = {}
    for spec in [*upload_topics(s, 4), *app_topics(s)]:
        want.setdefault(spec.name, spec.partitions)
    wait_for(lambda: len(partitions_of(s, prefix)) == sum(want.values()), 30, "this test's topics in the cluster's metadata")
    parts = partitions_of(s, prefix)
    assert all(len(p.replicas) == NODES for p in parts), "every topic on all three nodes"

    first = [u for u, _ in image_uploads(small_images(60, seed=11), inline=True, prefix="pre")]
    send_uploads(s, iter(first))
    items = [u.item_id for u in first]
    send_engagements(s, users=20, items=items, n=600, seed=3)
    worker = start_cli(s, tmp_path / "worker.log", "worker", "--idle-exit", "15")
    app = ProfilesApp(s, tmp_path / "profiles.log")
    app.start()
    try:
        wait_for(lambda: topic_size(s, s.topics.features_topic) >= 12, 120, "the first feature records")
        # the node leading the uploads' partition 0 goes, mid-stream, with no warning
        leader = next(p.leader for p in parts if p.topic == s.topics.uploads_topic and p.partition == 0)
        ep = services.Endpoints.load(s.services.state_dir)
        victim = ep.kafka_pids[leader - 1]
        assert topic_size(s, s.topics.features_topic) < len(first), "the worker finished before the kill; the test proves nothing"
        os.kill(victim, signal.SIGKILL)
        # writes go on while it is down: two in-sync replicas acknowledge them (min.insync.replicas=2)
        later = [u for u, _ in image_uploads(small_images(30, seed=12), inline=True, prefix="during")]
        send_uploads(s, iter(later))
        bad = bad_uploads(s, tmp_path, 4, "bad")
        send_engagements(s, users=20, items=items + [u.item_id for u in later], n=400, seed=4)
        # the controller fences the node once its heartbeats stop (broker.session.timeout.ms, 9 s)
        wait_for(lambda: any(len(p.isr) < NODES for p in partitions_of(s, prefix)), 60, "the killed node out of the in-sync replicas")
        shown = run_cli(cluster, "status")
        assert shown.returncode == 0, shown.stderr
        assert f"kafka node {leader}" in shown.stdout and "stopped" in shown.stdout and "under-replicated" in shown.stdout

        services.up(cluster, kafka=True, triton=False, log=print)  # starts the killed node only; it rejoins and catches up
        assert services.Endpoints.load(s.services.state_dir).kafka_pids[leader - 1] != victim
        wait_for(lambda: all_in_sync(s, prefix), 120, "every partition back to three in-sync replicas")
        wait_for(lambda: "partitions: 0 under-replicated" in run_cli(cluster, "status").stdout, 60, "`mmfeat status`: all in sync")

        assert worker.wait(300) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        values, dlq = outcomes(s)
        good = {u.item_id for u in [*first, *later]}
        assert set(values) == good and all(len(v) == 1 for v in values.values())  # one outcome each, byte for byte
        assert dlq == dict.fromkeys(bad, 1) and records(s, s.topics.deferred_topic) == []
        assert committed_lag(s) == 0

        truth = recompute_profiles(s, profile_config(s))
        assert sum(p.applied for p in truth.values()) == 1000
        wait_converged(app, truth, 180)
    finally:
        app.stop(signal.SIGKILL)
        if worker.poll() is None:
            worker.kill()


def test_workers_of_one_group_on_one_host_one_killed_one_added_write_what_one_writes(cluster: Settings, tmp_path: Path) -> None:
    uploads = [u for u, _ in image_uploads(small_images(90, seed=13), inline=True, prefix="grp")]

    def send(s: Settings) -> None:  # the same bytes to both runs (send_uploads would stamp created_at anew)
        raw = [OutRecord(s.topics.uploads_topic, u.item_id, u.model_dump_json(exclude_none=True).encode()) for u in uploads]
        assert send_records(s, raw) == len(uploads)

    one = own_topics(cluster, tmp_path / "one")
    send(one)
    single = start_cli(one, tmp_path / "single.log", "worker", "--idle-exit", "8")
    assert single.wait(300) == 0, (tmp_path / "single.log").read_text()[-3000:]
    reference, _ = outcomes(one)
    assert set(reference) == {u.item_id for u in uploads}

    many = own_topics(cluster, tmp_path / "many")
    send(many)
    logs = [tmp_path / f"w{k}.log" for k in range(4)]
    workers = [start_cli(many, logs[k], "worker", "--idle-exit", "15") for k in range(3)]
    try:
        wait_for(lambda: topic_size(many, many.topics.features_topic) >= 12, 120, "the first feature records")
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(10)
        assert topic_size(many, many.topics.features_topic) < len(uploads), "done before the kill; the test proves nothing"
        workers.append(start_cli(many, logs[3], "worker", "--idle-exit", "15"))
        for k in (0, 2, 3):
            assert workers[k].wait(300) == 0, logs[k].read_text()[-3000:]
        # three live workers on one host, each with a dedupe store of its own (RocksDB locks a store to one process)
        assert {p.name for p in (tmp_path / "many").glob("dedupe*")} >= {"dedupe", "dedupe-2", "dedupe-3"}
        values, dlq = outcomes(many)
        assert dlq == {} and records(many, many.topics.deferred_topic) == []
        assert values == reference  # every value byte for byte as one worker wrote it, and once
        assert committed_lag(many) == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
