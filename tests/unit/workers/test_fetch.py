"""Fetch guards: every refusal happens before any socket is opened or file is read."""

import base64
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mmfeat.errors import FetchError, MediaRejected
from mmfeat.schemas import UploadV1
from workers.fetch import FetchPolicy, check_uri, fetch_media


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any connection attempt or DNS lookup fails the test."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert attempts == []


def upload(**media: str) -> UploadV1:
    return UploadV1(item_id="i1", owner_id="o1", media_type="image", created_at=datetime.now(UTC), **media)  # type: ignore[arg-type]


def policy(root: Path, hosts: tuple[str, ...] = ("media.example.com",), max_bytes: int = 1000) -> FetchPolicy:
    return FetchPolicy.of([root], hosts, max_bytes, 1.0)


def test_file_under_allowed_root_is_read(tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"abc")
    assert fetch_media(upload(media_uri=f.as_uri()), policy(tmp_path)) == b"abc"


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file://otherhost/tmp/a.png", "file:///tmp/../etc/passwd"])
def test_files_outside_roots_are_denied(tmp_path: Path, uri: str) -> None:
    with pytest.raises(FetchError) as e:
        fetch_media(upload(media_uri=uri), policy(tmp_path))
    assert e.value.reason == "uri_denied"


def test_symlink_escaping_the_root_is_denied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc/passwd", root / "innocent.png")
    with pytest.raises(FetchError, match="outside the allowed roots"):
        fetch_media(upload(media_uri=(root / "innocent.png").as_uri()), policy(root))


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example.org/x.png",
        "https://media.example.com.evil.org/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x.png",
        "ftp://media.example.com/x.png",
        "gopher://x",
        "/etc/passwd",
        "data:image/png;base64,AAAA",
    ],
)
def test_disallowed_uris_are_refused_without_connecting(tmp_path: Path, uri: str) -> None:
    with pytest.raises(FetchError) as e:
        fetch_media(upload(media_uri=uri), policy(tmp_path))
    assert e.value.reason == "uri_denied"


def test_allow_listed_host_passes_the_guard(tmp_path: Path) -> None:
    target = check_uri("https://MEDIA.example.com/a/b.png?x=1", policy(tmp_path))
    assert target.url == "https://MEDIA.example.com/a/b.png?x=1"
    assert check_uri("http://127.0.0.1:8080/x", policy(tmp_path, hosts=("127.0.0.1:8080",))).url


def test_size_caps(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(MediaRejected) as e:
        fetch_media(upload(media_uri=big.as_uri()), policy(tmp_path))
    assert e.value.reason == "media_too_large"
    with pytest.raises(MediaRejected):
        fetch_media(upload(media_b64=base64.b64encode(b"x" * 1001).decode()), policy(tmp_path))
    assert fetch_media(upload(media_b64=base64.b64encode(b"x" * 1000).decode()), policy(tmp_path)) == b"x" * 1000


def test_missing_file_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as e:
        fetch_media(upload(media_uri=(tmp_path / "nope.png").as_uri()), policy(tmp_path))
    assert e.value.reason == "fetch_failed"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("http://name.invalid:1@127.0.0.1:8080/x.png", "userinfo"),
        ("http://user@media.example.com/x.png", "userinfo"),
        ("http://media.example.com:99999/x.png", "port"),
        ("http://media.example.com:-1/x.png", "port"),
        ("http://media.example.com:8o/x.png", "port"),
        ("http://media.example.com/a b.png", "character"),
        ("http://media.example.com/\u00e9.png", "character"),
        ("file:///tmp/a%00b.png", "absolute path"),
        ("http://[::1/x.png", "IPv6|malformed"),
        ("http://exa_mple.com/x.png", "malformed host"),
    ],
)
def test_malformed_uris_are_refused_by_the_one_parser(tmp_path: Path, uri: str, says: str) -> None:
    with pytest.raises(FetchError, match=says) as e:
        fetch_media(upload(media_uri=uri), policy(tmp_path, hosts=("media.example.com", "127.0.0.1:8080")))
    assert e.value.reason == "uri_denied"
    assert "\n" not in str(e.value)


def test_what_the_allow_list_checks_is_what_is_connected_to(tmp_path: Path) -> None:
    target = check_uri("http://MEDIA.example.com:8080/a/b.png?x=1#frag", policy(tmp_path, hosts=("media.example.com",)))
    assert (target.host, target.port, target.request_target) == ("media.example.com", 8080, "/a/b.png?x=1")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(FetchError, match="not a regular file") as e:  # open() on a FIFO would block forever
        fetch_media(upload(media_uri=fifo.as_uri()), policy(tmp_path))
    assert e.value.reason == "uri_denied"


def test_a_directory_and_a_device_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_media(upload(media_uri=(tmp_path / "dir.png").as_uri()), FetchPolicy.of([tmp_path], (), 1000, 1.0))
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_media(upload(media_uri="file:///dev/zero"), FetchPolicy.of([Path("/dev")], (), 1000, 1.0))


def test_only_allow_listed_names_reach_the_resolver(tmp_path: Path, no_network: list[object]) -> None:
    for uri in ("http://name.invalid:1@127.0.0.1:8080/x", "http://evil.example.org/x", "http://127.0.0.1:8081/x"):
        with pytest.raises(FetchError):
            fetch_media(upload(media_uri=uri), policy(tmp_path, hosts=("127.0.0.1:8080",)))
    assert no_network == []  # refused before any lookup
