"""The embedded default services: a real Kafka 4.x broker (KRaft) and a real Triton server.

`mmfeat up` starts what is not already running or named by MMFEAT_BOOTSTRAP_SERVERS /
MMFEAT_TRITON_URL, waits until each is ready and records pids and endpoints under the state
directory; `mmfeat down` stops exactly the processes recorded there. docs/services.md records
what was learned about starting both on a machine without Docker or a GPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfeat.cli.services.kafka import KAFKA_PROPERTIES, KAFKA_VERSION, KafkaPlan, kafka_libs, kafka_ready, start_kafka
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
)
from mmfeat.errors import ServiceError
from mmfeat.settings import PROJECT_ROOT, Settings

__all__ = [
    "KAFKA_MARKERS", "KAFKA_PROPERTIES", "KAFKA_VERSION", "PORT_SETTINGS", "PROJECT_ROOT", "TRITON_MARKERS", "Endpoints", "KafkaPlan",
    "ServiceError", "TritonPlan", "down", "free_port", "free_ports", "group_members", "kafka_libs", "kafka_ready", "pid_alive",
    "render_model_repository", "render_reader_model", "resolve", "start_kafka", "start_triton", "stop_group", "stop_pid",
    "triton_backend_dir", "triton_env", "triton_ready", "up", "wait_until", "with_free_ports",
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
    kafka_pid: int | None = None
    triton_pid: int | None = None

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints:
        path = state_dir / ENDPOINTS
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

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
    elif kafka and ep.kafka_pid and _runs(ep.kafka_pid, "kafka.Kafka") and ep.bootstrap_servers and kafka_ready(ep.bootstrap_servers):
        log(f"kafka: already running at {ep.bootstrap_servers} (pid {ep.kafka_pid})")
    elif kafka:
        plan = KafkaPlan(state / "kafka", settings.services.kafka_port, settings.services.kafka_controller_port)
        if _port_open(plan.port):
            raise ServiceError(f"port {plan.port} is taken by another process; stop it or set MMFEAT_BOOTSTRAP_SERVERS")
        log(f"kafka: starting Apache Kafka {KAFKA_VERSION} (KRaft) on {plan.bootstrap} ...")
        proc = start_kafka(plan, settings.services.cache_dir)
        ep.kafka_pid, ep.bootstrap_servers = proc.pid, plan.bootstrap
        ep.save(state)
        wait_until(lambda: kafka_ready(plan.bootstrap), "kafka broker", proc, 90, plan.dir / "server.log")
        log(f"kafka: ready at {plan.bootstrap} (pid {proc.pid})")
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


def down(settings: Settings, log: Log = print) -> None:
    """Stop exactly the processes `up` recorded in the state directory."""
    ep = Endpoints.load(settings.services.state_dir)
    for name, pid, markers in (("triton", ep.triton_pid, TRITON_MARKERS), ("kafka", ep.kafka_pid, KAFKA_MARKERS)):
        if pid and not stop_group(pid, markers, log=log, name=name):
            log(f"{name}: pid {pid} already gone")
    (settings.services.state_dir / ENDPOINTS).unlink(missing_ok=True)
