"""The embedded default services: a real Kafka 4.x broker (KRaft) and a real Triton server.

`mmfeat up` starts what is not already running or named by MMFEAT_BOOTSTRAP_SERVERS /
MMFEAT_TRITON_URL, waits until each is ready and records pids and endpoints under the state
directory; `mmfeat down` stops exactly the processes recorded there. docs/services.md records
what was learned about starting both on a machine without Docker or a GPU.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmfeat.cli.services.kafka import (
    KAFKA_PROPERTIES,
    KAFKA_VERSION,
    NODE_PORT_STEP,
    KafkaPlan,
    cluster_plans,
    kafka_command,
    kafka_libs,
    kafka_ready,
    min_insync,
    start_kafka,
)
from mmfeat.cli.services.processes import (
    KAFKA_MARKERS,
    TRITON_MARKERS,
    Log,
    _port_open,
    _runs,
    free_port,
    free_ports,
    group_members,
    pid_alive,
    stop_group,
    stop_pid,
    wait_until,
)
from mmfeat.cli.services.triton import (
    TritonPlan,
    render_model_repository,
    render_reader_model,
    start_triton,
    triton_backend_dir,
    triton_env,
    triton_ready,
    tritonserver_command,
)
from mmfeat.errors import ServiceError
from mmfeat.settings import PROJECT_ROOT, Settings

__all__ = [
    "KAFKA_MARKERS",
    "KAFKA_PROPERTIES",
    "KAFKA_VERSION",
    "PORT_SETTINGS",
    "PROJECT_ROOT",
    "TRITON_MARKERS",
    "Endpoints",
    "KafkaPlan",
    "NodeStatus",
    "PartitionStatus",
    "ServiceError",
    "TritonPlan",
    "cluster_plans",
    "down",
    "free_cluster_ports",
    "free_port",
    "free_ports",
    "group_members",
    "kafka_command",
    "kafka_libs",
    "kafka_plans",
    "kafka_ready",
    "kafka_status",
    "min_insync",
    "pid_alive",
    "render_model_repository",
    "render_reader_model",
    "resolve",
    "start_kafka",
    "start_triton",
    "stop_group",
    "stop_pid",
    "triton_backend_dir",
    "triton_env",
    "triton_ready",
    "tritonserver_command",
    "up",
    "wait_until",
    "with_free_ports",
]  # fmt: skip

ENDPOINTS = "endpoints.json"
PORT_SETTINGS = (
    "kafka_port",
    "kafka_controller_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "worker_metrics_port",
    "backfill_metrics_port",
)


@dataclass
class Endpoints:
    bootstrap_servers: str | None = None
    triton_url: str | None = None
    triton_http: str | None = None
    kafka_pids: list[int] = field(default_factory=list)  # one per KRaft node, node 1 first
    triton_pid: int | None = None

    @property
    def kafka_pid(self) -> int | None:
        return self.kafka_pids[0] if self.kafka_pids else None

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints:
        path = state_dir / ENDPOINTS
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        if "kafka_pid" in raw:  # written before clusters: one broker
            pid = raw.pop("kafka_pid")
            raw["kafka_pids"] = [pid] if pid else []
        return cls(**raw)

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / ENDPOINTS).write_text(json.dumps(self.__dict__, indent=2))


def resolve(settings: Settings) -> Settings:
    """Fill in the broker and Triton endpoints from `mmfeat up`'s record where env/flags named none."""
    if settings.kafka.bootstrap_servers and settings.triton.triton_url:
        return settings
    ep = Endpoints.load(settings.services.state_dir)
    return settings.updated(
        {
            "bootstrap_servers": settings.kafka.bootstrap_servers or ep.bootstrap_servers,
            "triton_url": settings.triton.triton_url or ep.triton_url,
        }
    )


def with_free_ports(settings: Settings) -> Settings:
    """The same settings with every embedded-service port moved to a free one (tests, demo)."""
    return settings.updated(dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True)))


def up(
    settings: Settings, *, model_repositories: Sequence[Path] | None = None, kafka: bool = True, triton: bool = True, log: Log = print
) -> Endpoints:
    """Start the embedded broker and Triton unless running or named by settings; idempotent."""
    state = settings.services.state_dir
    ep = Endpoints.load(state)
    if kafka and settings.kafka.bootstrap_servers:
        log(f"kafka: using {settings.kafka.bootstrap_servers} (MMFEAT_BOOTSTRAP_SERVERS), starting nothing")
    elif kafka:
        _up_kafka(settings, ep, log)
    if triton and settings.triton.triton_url:
        log(f"triton: using {settings.triton.triton_url} (MMFEAT_TRITON_URL), starting nothing")
    elif triton and ep.triton_pid and _runs(ep.triton_pid, "tritonserver") and ep.triton_http and triton_ready(ep.triton_http):
        log(f"triton: already running at {ep.triton_url} (pid {ep.triton_pid})")
    elif triton:
        if ep.triton_pid:  # a server killed hard leaves its backend stubs behind in its group
            stop_group(ep.triton_pid, TRITON_MARKERS, log=log, name="triton (left over)")
        repos = tuple(model_repositories or (settings.services.model_repository,))
        tplan = TritonPlan(
            state / "triton",
            repos,
            settings.services.triton_http_port,
            settings.services.triton_grpc_port,
            settings.services.triton_metrics_port,
        )
        for port in (tplan.http_port, tplan.grpc_port, tplan.metrics_port):
            if _port_open(port):
                raise ServiceError(f"port {port} is taken by another process; stop it or set MMFEAT_TRITON_URL")
        log(f"triton: starting tritonserver on grpc {tplan.grpc_url}, http {tplan.http_url} ...")
        tproc = start_triton(tplan, settings.services.cache_dir)
        ep.triton_pid, ep.triton_url, ep.triton_http = tproc.pid, tplan.grpc_url, tplan.http_url
        ep.save(state)
        wait_until(lambda: triton_ready(tplan.http_url), "tritonserver", tproc, 300, tplan.dir / "tritonserver.log")
        log(f"triton: ready at {tplan.grpc_url} (pid {tproc.pid})")
    return ep


def free_cluster_ports(nodes: int, avoid: Sequence[int] = ()) -> tuple[int, int]:
    """A broker and a controller port free on every node of a cluster (node i on the ports + 100 * (i - 1)), none of
    them in ``avoid`` (ports already picked for other services but not listening yet)."""
    # below the ephemeral range: a node's port picked there can be taken, before the node binds it, as the source
    # port of a connection another node opens meanwhile (a soak's node 1 failed to start on that)
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10002, low - NODE_PORT_STEP * nodes), 2)
        wanted = {port + NODE_PORT_STEP * i + k for i in range(nodes) for k in (0, 1)}
        if not wanted & set(avoid) and not any(_port_open(p) for p in wanted):
            return port, port + 1
    raise ServiceError(f"no free ports for a {nodes}-node cluster")


def kafka_plans(settings: Settings) -> list[KafkaPlan]:
    """The nodes `mmfeat up` runs: one in ``<state>/kafka``, or a cluster in ``<state>/kafka-cluster/node-i``."""
    sv = settings.services
    base = sv.state_dir / ("kafka" if sv.kafka_brokers == 1 else "kafka-cluster")
    return cluster_plans(base, sv.kafka_port, sv.kafka_controller_port, sv.kafka_brokers, sv.kafka_cluster_id)


def _up_kafka(settings: Settings, ep: Endpoints, log: Log) -> None:
    """Start every node that is not running (all of them at first, a killed one later: it rejoins its cluster)."""
    plans = kafka_plans(settings)
    pids = ep.kafka_pids if len(ep.kafka_pids) == len(plans) else []
    bootstrap = ",".join(p.bootstrap for p in plans)
    if ep.bootstrap_servers not in (None, bootstrap):  # another layout was started here: it must go first
        if any(_runs(pid, *KAFKA_MARKERS) for pid in ep.kafka_pids):
            raise ServiceError(f"kafka already runs at {ep.bootstrap_servers}; `mmfeat down` first to start {len(plans)} node(s)")
        pids = []
    started: list[tuple[KafkaPlan, subprocess.Popen[bytes]]] = []
    new_pids = []
    for i, plan in enumerate(plans):
        pid = pids[i] if pids else None
        if pid and _runs(pid, *KAFKA_MARKERS):
            new_pids.append(pid)
            continue
        for port in (plan.port, plan.controller_port):
            if _port_open(port):
                raise ServiceError(f"port {port} is taken by another process; stop it or set MMFEAT_BOOTSTRAP_SERVERS")
        what = f"node {plan.node_id} of {len(plans)}" if len(plans) > 1 else "KRaft"
        log(f"kafka: starting Apache Kafka {KAFKA_VERSION} ({what}) on {plan.bootstrap} ...")
        proc = start_kafka(plan, settings.services.cache_dir)
        started.append((plan, proc))
        new_pids.append(proc.pid)
    ep.kafka_pids, ep.bootstrap_servers = new_pids, bootstrap
    ep.save(settings.services.state_dir)
    if not started:  # every node runs; one that runs but does not answer yet gets the start-up wait too
        wait_until(functools.partial(kafka_ready, bootstrap), "kafka", None, 90, plans[0].dir / "server.log")
        log(f"kafka: already running at {bootstrap} (pid {', '.join(map(str, new_pids))})")
        return
    for plan, proc in started:  # a cluster's first node is ready only once a quorum of controllers runs: all started first
        wait_until(functools.partial(kafka_ready, plan.bootstrap), f"kafka node {plan.node_id}", proc, 90, plan.dir / "server.log")
        log(f"kafka: {f'node {plan.node_id} ' if len(plans) > 1 else ''}ready at {plan.bootstrap} (pid {proc.pid})")


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    pid: int | None
    bootstrap: str
    running: bool  # the recorded pid still runs kafka.Kafka
    listening: bool  # the broker port accepts connections


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    leader: int  # node id; -1 while the partition has none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


def kafka_status(settings: Settings, timeout_s: float = 5.0) -> tuple[list[NodeStatus], list[PartitionStatus]]:
    """What `mmfeat up` runs for Kafka, and every topic's partitions as the cluster reports them (leader, replicas,
    in-sync replicas). The partitions come from the brokers named by settings when those name any."""
    from mmfeat.kafka.client import make_admin

    ep = Endpoints.load(settings.services.state_dir)
    nodes = []
    if not settings.kafka.bootstrap_servers:
        plans = kafka_plans(settings)
        pids = ep.kafka_pids if len(ep.kafka_pids) == len(plans) else [None] * len(plans)
        for plan, pid in zip(plans, pids, strict=True):
            running = bool(pid) and _runs(pid or 0, *KAFKA_MARKERS)
            nodes.append(NodeStatus(plan.node_id, pid, plan.bootstrap, running, _port_open(plan.port)))
    reached = resolve(settings).updated({"kafka_log_level": 0})  # a stopped node is reported here, not logged
    if nodes:  # ask the nodes that listen: metadata from one that is down would be a connect error
        reached = reached.updated({"bootstrap_servers": ",".join(n.bootstrap for n in nodes if n.listening) or None})
    if not reached.kafka.bootstrap_servers:
        return nodes, []
    metadata = make_admin(reached).list_topics(timeout=timeout_s)
    parts = [
        PartitionStatus(name, p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
        for name, topic in sorted(metadata.topics.items())
        if not name.startswith("__")
        for p in sorted(topic.partitions.values(), key=lambda p: p.id)
    ]
    return nodes, parts


def down(settings: Settings, log: Log = print) -> None:
    """Stop exactly the processes `up` recorded in the state directory."""
    ep = Endpoints.load(settings.services.state_dir)
    kafka = [(f"kafka node {i}" if len(ep.kafka_pids) > 1 else "kafka", pid, KAFKA_MARKERS) for i, pid in enumerate(ep.kafka_pids, 1)]
    for name, pid, markers in (("triton", ep.triton_pid, TRITON_MARKERS), *kafka):
        if pid and not stop_group(pid, markers, log=log, name=name):
            log(f"{name}: pid {pid} already gone")
    (settings.services.state_dir / ENDPOINTS).unlink(missing_ok=True)
