"""Hostile records and hostile peers, on the real broker and Triton: each ends in the DLQ with its reason, the
worker keeps going, no name off the allow-list is looked up, and no record can crash-loop a partition."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mmfeat.kafka.client import DeliveryTracker, OutRecord, make_producer
from mmfeat.schemas import DlqRecordV1
from mmfeat.settings import Settings
from tests.integration.conftest import by_key, committed_lag, records, run_cli, small_images, start_cli, wait_for
from workers.worker import BackgroundWorker


class HostileServer:
    """A loopback TCP server that answers each path the way a broken or malicious media host would."""

    def __init__(self, png: bytes) -> None:
        self.png = png
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hits: dict[str, int] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(4096).decode("latin-1")
                path = request.split(" ")[1] if " " in request else "?"
                self.hits[path] = self.hits.get(path, 0) + 1
                self._respond(conn, path)
            except OSError:
                pass

    def _respond(self, conn: socket.socket, path: str) -> None:
        if path == "/good.png":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.png), self.png))
        elif path == "/nonhttp":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        elif path == "/broken-chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nnot hex\r\n")
        elif path == "/switching":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            self._stop.wait(30)
        elif path == "/trickle":  # a body one byte a second: each read is quick, the whole is endless
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not self._stop.wait(1.0):
                conn.sendall(b"x")
        elif path == "/slow-headers":
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
                if self._stop.wait(0.5):
                    return
                conn.sendall(bytes([b]))
        elif path == "/hang":  # accepts and never answers
            self._stop.wait(300)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer(small_images(1, seed=31)[0].read_bytes())
    yield server
    server.close()


def upload(item_id: str, **fields: Any) -> bytes:
    rec = {"item_id": item_id, "owner_id": "o1", "media_type": "image", "created_at": datetime.now(UTC).isoformat(), **fields}
    return json.dumps(rec).encode()


def inline(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_hostile_records_and_peers_end_in_the_dlq_and_the_worker_keeps_going(
    settings: Settings, hostile: HostileServer, tmp_path: Path, refused_lookups: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings.updated({"allowed_hosts": [f"127.0.0.1:{hostile.port}"], "fetch_timeout_s": 2.0})
    good = small_images(3, seed=32)
    os.mkfifo(tmp_path / "pipe.png")
    deep = b'{"item_id": "deep", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    cases: list[tuple[str, bytes, str | None]] = [  # (key, value, DLQ reason; None: a feature)
        ("ok-0", upload("ok-0", media_b64=inline(good[0].read_bytes())), None),
        ("deep", deep, "bad_json"),
        ("port", upload("port", media_uri="http://127.0.0.1:99999/x.png"), "uri_denied"),
        ("nul", upload("nul", media_uri=(tmp_path / "a%00b.png").as_uri().replace("%2500", "%00")), "uri_denied"),
        ("surrogate", b'{"item_id": "sur\\udc80", "owner_id": "o1"}', "bad_json"),
        ("space", upload("space", media_uri=hostile.url("/a b.png")), "uri_denied"),
        ("nonhttp", upload("nonhttp", media_uri=hostile.url("/nonhttp")), "fetch_failed"),
        ("chunked", upload("chunked", media_uri=hostile.url("/broken-chunked")), "fetch_failed"),
        ("switching", upload("switching", media_uri=hostile.url("/switching")), "fetch_failed"),
        ("fifo", upload("fifo", media_uri=(tmp_path / "pipe.png").as_uri()), "uri_denied"),
        ("trickle", upload("trickle", media_uri=hostile.url("/trickle")), "fetch_timeout"),
        ("slow-headers", upload("slow-headers", media_uri=hostile.url("/slow-headers")), "fetch_timeout"),
        ("userinfo", upload("userinfo", media_uri=f"http://name.invalid:1@127.0.0.1:{hostile.port}/good.png"), "uri_denied"),
        ("newline", upload("id\n2026-12-01 INFO mmfeat.worker: forged", media_b64=inline(good[1].read_bytes())), "schema"),
        ("ok-http", upload("ok-http", media_uri=hostile.url("/good.png")), None),
        ("ok-1", upload("ok-1", media_b64=inline(good[2].read_bytes())), None),
    ]
    DeliveryTracker.of(s).produce_all([OutRecord(s.topics.uploads_topic, k, v) for k, v, _ in cases], 30)

    with caplog.at_level(logging.INFO, logger="mmfeat"):
        stats = BackgroundWorker(s, max_records=len(cases), idle_exit_s=60).join(240)
    assert stats.handled == len(cases)

    dlq = by_key(records(s, s.topics.dlq_topic))
    got = {k: DlqRecordV1.model_validate_json(r.value or b"").reason for k, r in dlq.items()}
    assert got == {k: reason for k, _, reason in cases if reason}
    assert set(by_key(records(s, s.topics.features_topic))) == {k for k, _, reason in cases if reason is None}
    assert hostile.hits.get("/good.png") == 1  # the userinfo URI was refused before any connection
    assert refused_lookups() == []  # ...and before any lookup: name.invalid was never resolved
    for rec in caplog.records:  # one record, one log line: the forged line stayed inside its record's line
        assert "\n" not in rec.getMessage()
    assert any("id\\x0a2026-12-01 INFO" in r.getMessage() for r in caplog.records)
    assert committed_lag(s) == 0


def test_a_record_that_kills_the_worker_is_given_up_after_two_crashes_and_the_partition_moves_on(
    settings: Settings, hostile: HostileServer, tmp_path: Path
) -> None:
    # A record whose fetch never ends (here: a host that never answers, with a long deadline) stands in for one
    # that kills the process (a decoder segfault, the OOM killer): the worker is SIGKILLed while it is on it.
    s = settings.updated({"allowed_hosts": [f"127.0.0.1:{hostile.port}"], "fetch_timeout_s": 300.0, "batch_size": 4})
    good = small_images(6, seed=33)
    values = [upload(f"g{i}", media_b64=inline(p.read_bytes())) for i, p in enumerate(good[:3])]
    values += [upload("poison", media_uri=hostile.url("/hang"))]
    values += [upload(f"g{i + 3}", media_b64=inline(p.read_bytes())) for i, p in enumerate(good[3:])]
    producer = make_producer(s)
    for v in values:  # one partition, in this order
        producer.produce(s.topics.uploads_topic, key=json.loads(v)["item_id"].encode(), value=v, partition=0)
    assert producer.flush(10) == 0

    log = tmp_path / "worker.log"
    kills = 0
    for _ in range(6):
        proc = start_cli(s, log, "worker", "--idle-exit", "8")
        seen = hostile.hits.get("/hang", 0)
        wait_for(lambda proc=proc, seen=seen: proc.poll() is not None or hostile.hits.get("/hang", 0) > seen, 180, "a run to end or hang")
        if proc.poll() is not None:
            assert proc.returncode == 0, log.read_text()[-3000:]
            break
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    assert kills == s.worker.max_crashes_per_record + 1  # tried once in its batch, then alone, then given up unread

    dlq = by_key(records(s, s.topics.dlq_topic))
    assert set(dlq) == {"poison"}
    d = DlqRecordV1.model_validate_json(dlq["poison"].value or b"")
    assert d.reason == "crash_loop" and d.source_offset == 3 and base64.b64decode(d.raw_value_b64 or "") == values[3]
    assert set(by_key(records(s, s.topics.features_topic))) == {f"g{i}" for i in range(6)}
    assert committed_lag(s) == 0
    assert "crash_loop" in log.read_text()


def test_tail_escapes_what_records_carry(settings: Settings) -> None:
    evil = "\x1b[2J\x1b]0;owned\x07"
    producer = make_producer(settings)
    producer.produce(settings.topics.dlq_topic, key=f"k{evil}".encode(), value=json.dumps({"error_message": evil, "reason": "x"}).encode())
    producer.produce(settings.topics.dlq_topic, key=b"plain", value=f"raw {evil}".encode())
    assert producer.flush(10) == 0
    pretty = run_cli(settings, "tail", settings.topics.dlq_topic, "--timeout", "3")
    assert pretty.returncode == 0, pretty.stderr
    assert "\x1b" not in pretty.stdout and "\x07" not in pretty.stdout and "\\x1b[2J" in pretty.stdout


def test_commands_end_with_one_line_when_the_broker_is_unreachable(settings: Settings) -> None:
    s = settings.updated({"bootstrap_servers": "127.0.0.1:9"})  # nothing listens there
    got = run_cli(s, "tail", "media.uploads", "--timeout", "2", timeout_s=120)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert [line for line in got.stderr.splitlines() if line.startswith("error:")], got.stderr


def test_down_stops_the_backend_stub_a_hard_killed_triton_leaves_behind(stack: Any, settings: Settings, tmp_path: Path) -> None:
    from mmfeat.cli import services

    own = services.with_free_ports(settings.updated({"state_dir": tmp_path / "own", "triton_url": None}))
    ep = services.up(own, model_repositories=[stack.model_repository], kafka=False, log=print)
    assert ep.triton_pid is not None
    try:
        stubs = services.group_members(ep.triton_pid, ("triton_python_backend_stub",))
        assert stubs, "the Python backend stub runs in the server's process group"
        os.kill(ep.triton_pid, signal.SIGKILL)
        wait_for(lambda: not services.pid_alive(ep.triton_pid or 0), 10, "tritonserver to die")
        assert services.group_members(ep.triton_pid, ("triton_python_backend_stub",)) == stubs  # orphaned, still running
    finally:
        services.down(own, log=print)
    assert services.group_members(ep.triton_pid, services.TRITON_MARKERS) == []
    assert not any(services.pid_alive(p) for p in stubs)


def test_up_works_from_outside_the_checkout(settings: Settings, stack: Any, tmp_path: Path) -> None:
    from mmfeat.cli import services

    own = services.with_free_ports(settings.updated({"state_dir": tmp_path / "own", "triton_url": None}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMFEAT_")}
    env |= {f"MMFEAT_{k.upper()}": str(own.value(k)) for k in services.PORT_SETTINGS}
    cli = services.PROJECT_ROOT / "bin" / "mmfeat"
    try:
        cmd = [str(cli), "--state-dir", str(own.services.state_dir), "up", "--no-kafka"]
        got = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-2000:]
        ep = services.Endpoints.load(own.services.state_dir)
        assert ep.triton_http and services.triton_ready(ep.triton_http, "captioner")
    finally:
        subprocess.run(
            [str(cli), "--state-dir", str(own.services.state_dir), "down"], cwd=tmp_path, env=env, capture_output=True, timeout=120
        )
