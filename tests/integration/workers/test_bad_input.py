"""Malformed records land in the DLQ with a reason; the worker keeps going; no traffic leaves loopback."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmfeat.kafka.client import DeliveryTracker, OutRecord, make_producer
from mmfeat.schemas import DlqRecordV1, FeatureRecordV2
from mmfeat.settings import Settings
from tests.integration.conftest import by_key, records, small_images
from workers.worker import BackgroundWorker


def upload(item_id: str, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"item_id": item_id, "owner_id": "o1", "media_type": "image", "created_at": datetime.now(UTC).isoformat()}
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not ...}


def inline(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on loopback serving one real image, for the allow-listed http(s) path."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "good.png").write_bytes(small_images(1, seed=9)[0].read_bytes())
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every Python-level connection attempt; anything off loopback is refused and recorded."""
    seen: list[Any] = []
    real = socket.create_connection

    def guarded(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        host = address[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            seen.append(address)
            raise OSError(f"test guard: refused connection to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return seen


def test_malformed_records_go_to_the_dlq_and_the_worker_keeps_going(
    settings: Settings, image_server: str, outbound: list[Any], tmp_path: Path
) -> None:
    s = settings.updated({"max_media_bytes": 300_000, "allowed_hosts": [image_server]})
    good = small_images(4, seed=4)
    png = good[0].read_bytes()
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    os.symlink("/etc/passwd", tmp_path / "sneaky.png")

    def enc(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    cases: list[tuple[str, bytes | None, str | None]] = [  # (key, value, expected DLQ reason or None for a feature)
        ("ok-0", enc(upload("ok-0", media_b64=inline(good[0].read_bytes()))), None),
        ("bad-json", b'{"item_id": "bad-json", oops', "bad_json"),
        ("missing", enc(upload("missing", owner_id=..., media_b64=inline(png))), "schema"),
        ("mistyped", enc(upload("mistyped", owner_id=42, media_b64=inline(png))), "schema"),
        ("both-media", enc(upload("both-media", media_b64=inline(png), media_uri=good[0].as_uri())), "schema"),
        ("tombstone", None, "schema"),
        ("ok-1", enc(upload("ok-1", media_uri=good[1].as_uri())), None),
        ("not-image", enc(upload("not-image", media_b64=inline(b"GIF89a this is not really an image" * 10))), "not_an_image"),
        ("truncated", enc(upload("truncated", media_b64=inline(png[: len(png) // 3]))), "caption"),
        ("oversized", enc(upload("oversized", media_b64=inline(os.urandom(400_000)))), "media_too_large"),
        ("huge-record", enc(upload("huge-record", media_b64=inline(png), text="x" * 700_000)), "record_too_large"),
        ("bomb", enc(upload("bomb", media_b64=inline(bomb.getvalue()))), "image_too_large"),
        ("passwd", enc(upload("passwd", media_uri="file:///etc/passwd")), "uri_denied"),
        ("symlink", enc(upload("symlink", media_uri=(tmp_path / "sneaky.png").as_uri())), "uri_denied"),
        ("far-host", enc(upload("far-host", media_uri="http://images.example.com/cat.png")), "uri_denied"),
        ("metadata", enc(upload("metadata", media_uri="http://169.254.169.254/latest/")), "uri_denied"),
        ("http-404", enc(upload("http-404", media_uri=f"http://{image_server}/missing.png")), "fetch_failed"),
        ("ok-http", enc(upload("ok-http", media_uri=f"http://{image_server}/good.png")), None),
        ("ok-2", enc(upload("ok-2", media_b64=inline(good[2].read_bytes()))), None),
    ]
    tracker = DeliveryTracker.of(s)
    tracker.produce_all([OutRecord(s.topics.uploads_topic, k, v) for k, v, _ in cases if v is not None], 30)
    producer = make_producer(s)  # a tombstone (null value) needs the raw client
    producer.produce(s.topics.uploads_topic, key=b"tombstone", value=None)
    producer.flush(10)

    stats = BackgroundWorker(s, max_records=len(cases), idle_exit_s=60).join(180)
    assert stats.handled == len(cases)

    dlq = records(s, s.topics.dlq_topic)
    dlq_by_key = by_key(dlq)
    expected_dlq = {k: reason for k, _, reason in cases if reason}
    assert len(dlq) == len(expected_dlq)
    assert {k: DlqRecordV1.model_validate_json(r.value or b"").reason for k, r in dlq_by_key.items()} == expected_dlq
    sent = {k: v for k, v, _ in cases}
    for key, rec in dlq_by_key.items():
        d = DlqRecordV1.model_validate_json(rec.value or b"")
        assert d.source_topic == s.topics.uploads_topic and d.error_message
        if sent[key] is not None and len(sent[key] or b"") <= 1024 * 1024:
            assert base64.b64decode(d.raw_value_b64 or "") == sent[key]  # nothing lost: the raw record travels along
    feats = by_key(records(s, s.topics.features_topic))
    assert set(feats) == {k for k, _, reason in cases if reason is None}
    assert all(FeatureRecordV2.model_validate_json(r.value or b"").ids("sp") for r in feats.values())
    assert outbound == []  # denied URIs were refused before any connection
