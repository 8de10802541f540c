"""Faults: SIGKILL of a worker mid-batch, and Triton stopped or SIGKILLed and restarted mid-run, lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mmfeat.cli import services
from mmfeat.cli.produce import image_uploads, send_uploads
from mmfeat.kafka.client import topic_size
from mmfeat.settings import Settings
from tests.integration.conftest import Stack, by_key, committed_lag, records, small_images, start_cli, wait_for
from workers.worker import BackgroundWorker


def start_worker(s: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return start_cli(s, log, "worker", *args)


def test_sigkill_mid_batch_then_restart_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    s = settings.updated({"batch_size": 4})
    n = 120
    uploads = [u for u, _ in image_uploads(small_images(n, seed=5), inline=True, prefix="kill")]
    send_uploads(s, iter(uploads))
    log = tmp_path / "worker.log"
    proc = start_worker(s, log)
    wait_for(lambda: topic_size(s, s.topics.features_topic) >= 12, 120, "the first feature records")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    at_kill = topic_size(s, s.topics.features_topic)
    assert at_kill < n, "worker finished before it could be killed; the test proves nothing"
    assert committed_lag(s) > 0

    restarted = start_worker(s, log, "--idle-exit", "8")
    assert restarted.wait(240) == 0, log.read_text()[-2000:]

    feats = records(s, s.topics.features_topic)
    latest = by_key(feats)
    assert set(latest) == {u.item_id for u in uploads}  # nothing lost
    # redelivered uploads rewrote the same value: at-least-once delivery, deterministic records
    values: dict[str, set[bytes]] = {}
    for r in feats:
        values.setdefault(r.key or "", set()).add(r.value or b"")
    assert all(len(v) == 1 for v in values.values())
    assert records(s, s.topics.dlq_topic) == [] and records(s, s.topics.deferred_topic) == []
    assert committed_lag(s) == 0


@pytest.mark.parametrize("how", ["stopped", "sigkilled"])
def test_triton_stopped_or_killed_and_restarted_mid_run_loses_nothing(stack: Stack, settings: Settings, tmp_path: Path, how: str) -> None:
    # A Triton of this test's own: stopping the session's server would break other tests.
    own = services.with_free_ports(settings.updated({"state_dir": tmp_path / "own", "triton_url": None}))
    ep = services.up(own, model_repositories=[stack.model_repository], kafka=False, log=print)
    try:
        s = settings.updated({"triton_url": ep.triton_url, "batch_size": 4, "triton_unavailable_backoff_s": 0.2})
        n = 60
        uploads = [u for u, _ in image_uploads(small_images(n, seed=6), inline=True, prefix="tri")]
        send_uploads(s, iter(uploads))
        worker = BackgroundWorker(s, max_records=n, idle_exit_s=120)
        wait_for(lambda: topic_size(s, s.topics.features_topic) >= 8, 120, "the first feature records")
        assert ep.triton_pid is not None
        if how == "stopped":
            services.stop_pid(ep.triton_pid)
        else:  # no warning: its Python backend stubs live on in its process group until `up` clears them
            os.kill(ep.triton_pid, signal.SIGKILL)
            wait_for(lambda: not services.pid_alive(ep.triton_pid or 0), 10, "tritonserver gone")
        before = topic_size(s, s.topics.features_topic)
        time.sleep(4)
        assert worker.alive(), "the worker must wait for Triton, not exit"
        assert topic_size(s, s.topics.dlq_topic) == 0, "Triton being down is not the records' fault"
        assert topic_size(s, s.topics.features_topic) - before <= s.worker.batch_size  # consumption paused
        assert before < n

        ep = services.up(own, model_repositories=[stack.model_repository], kafka=False, log=print)
        stats = worker.join(240)
        assert stats.dlq == 0 and stats.features == n
        assert set(by_key(records(s, s.topics.features_topic))) == {u.item_id for u in uploads}
        assert records(s, s.topics.dlq_topic) == []
        assert committed_lag(s) == 0
    finally:
        services.down(own, log=print)
