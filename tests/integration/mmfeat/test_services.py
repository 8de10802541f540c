"""`mmfeat up` is idempotent, `mmfeat down` stops exactly what it started, env vars start nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mmfeat.cli import services
from mmfeat.settings import PROJECT_ROOT
from tests.integration.conftest import Stack


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mmfeat", *args], env={**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_up_is_idempotent_and_down_stops_what_it_started(stack: Stack, tmp_path: Path) -> None:
    env = {
        "MMFEAT_STATE_DIR": str(tmp_path / "state"),
        "MMFEAT_MODEL_REPOSITORY": str(stack.model_repository),
        **{
            f"MMFEAT_{name.upper()}": str(port)
            for name, port in zip(services.PORT_SETTINGS, services.free_ports(len(services.PORT_SETTINGS)), strict=True)
        },
    }
    first = cli(env, "up")
    assert "kafka: ready" in first and "triton: ready" in first and "topics: created media.uploads" in first
    ep = services.Endpoints.load(tmp_path / "state")
    assert ep.kafka_pid and ep.triton_pid and services.pid_alive(ep.kafka_pid) and services.pid_alive(ep.triton_pid)

    second = cli(env, "up")
    assert "already running" in second and "starting" not in second and "topics: all present" in second
    assert services.Endpoints.load(tmp_path / "state").kafka_pid == ep.kafka_pid

    down = cli(env, "down")
    assert f"stopping pid {ep.kafka_pid}" in down and f"stopping pid {ep.triton_pid}" in down
    assert not services.pid_alive(ep.kafka_pid) and not services.pid_alive(ep.triton_pid)
    assert services.pid_alive(os.getpid())


def test_named_endpoints_start_nothing(stack: Stack, tmp_path: Path) -> None:
    env = {
        "MMFEAT_STATE_DIR": str(tmp_path / "state"),
        "MMFEAT_BOOTSTRAP_SERVERS": stack.settings.kafka.bootstrap_servers or "",
        "MMFEAT_TRITON_URL": stack.settings.triton.triton_url or "",
    }
    out = cli(env, "up")
    assert "starting nothing" in out and "starting Apache Kafka" not in out and "starting tritonserver" not in out
    assert services.Endpoints.load(tmp_path / "state").kafka_pid is None
