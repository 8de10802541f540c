"""Fetch an upload's media under a policy that is checked before any lookup, connection or file access.

- inline bytes (``media_b64``): size-capped;
- ``file://`` only for regular files whose real path (symlinks resolved, checked again on the opened file)
  is under an allowed root; opened non-blocking, so a FIFO or a device never blocks the worker;
- ``http(s)://`` only to allow-listed hosts: the URI is parsed once (``parse_uri``) and that one result is
  what the allow-list checks, what is resolved (nothing else is ever looked up) and what the request is
  sent to; userinfo is refused; no redirects; size-capped while streaming; one deadline for connect,
  headers and body together (``timeout_s``), so a server that trickles bytes cannot hold a batch.
Anything else is refused with reason ``uri_denied``.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfeat.errors import FetchError, MediaRejected
from mmfeat.schemas import Upload
from mmfeat.untrusted import clean


@dataclass(frozen=True)
class FetchPolicy:
    allowed_roots: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 10.0

    @classmethod
    def of(cls, roots: Sequence[Path], hosts: Sequence[str], max_bytes: int, timeout_s: float) -> FetchPolicy:
        return cls(tuple(Path(os.path.realpath(r)) for r in roots), tuple(h.lower() for h in hosts), max_bytes, timeout_s)


@dataclass(frozen=True)
class Target:
    """A parsed, allowed URI: a file path, or an HTTP(S) host, port and request target."""

    scheme: str
    path: Path | None = None
    host: str = ""  # lower case; what the allow-list checks, what is resolved, what the request is sent to
    port: int = 0
    request_target: str = "/"
    url: str = ""  # the URI as given, for messages


def _denied(message: str) -> FetchError:
    return FetchError(clean(message, 400), reason="uri_denied")


# Printable ASCII only: a space, a control character or a raw non-ASCII character is not part of a URI
# (a client would have to guess what it means, and two parsers may guess differently).
_URI_CHARS = re.compile(r"^[\x21-\x7e]+$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split_hostport(netloc: str, scheme: str) -> tuple[str, int]:
    if "@" in netloc:
        raise _denied(f"URI with userinfo (user@host) is refused: {netloc}")
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _denied(f"malformed IPv6 host in {netloc}")
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError as e:
            raise _denied(f"malformed IPv6 host in {netloc}") from e
    else:
        host, _, port_text = netloc.partition(":")
        host = host.lower()
        if not _HOSTNAME.match(host):
            raise _denied(f"malformed host {host!r}")
    if port_text == "":
        return host, _DEFAULT_PORTS[scheme]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _denied(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def parse_uri(uri: str) -> Target:
    """Parse a media URI, the one parse every later step uses; refuse what is malformed. Pure: no I/O."""
    if not _URI_CHARS.match(uri):
        raise _denied(f"URI holds a character not allowed in a URI (space, control or non-ASCII): {uri}")
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as e:  # "Invalid IPv6 URL" and the like
        raise _denied(f"malformed URI ({e}): {uri}") from e
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _denied(f"file URI with a host is refused: {uri}")
        path = urllib.parse.unquote(parts.path)
        if "\x00" in path or not path.startswith("/"):
            raise _denied(f"file URI path is not an absolute path: {uri}")
        return Target("file", path=Path(path), url=uri)
    if scheme in _DEFAULT_PORTS:
        host, port = _split_hostport(parts.netloc, scheme)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(scheme, host=host, port=port, request_target=target, url=uri)
    raise _denied(f"URI scheme {scheme or '(none)'!r} is not supported: {uri[:200]}")


def _under_roots(path: Path, policy: FetchPolicy) -> bool:
    return any(path.is_relative_to(root) for root in policy.allowed_roots)


def check_uri(uri: str, policy: FetchPolicy) -> Target:
    """Decide whether ``uri`` may be fetched. Pure: nothing is resolved, connected to or opened."""
    target = parse_uri(uri)
    if target.path is not None:
        real = Path(os.path.realpath(target.path))
        if not _under_roots(real, policy):
            roots = ", ".join(map(str, policy.allowed_roots)) or "none configured (MMFEAT_ALLOWED_ROOTS)"
            raise _denied(f"{uri} is outside the allowed roots ({roots})")
        return Target("file", path=real, url=uri)
    if target.host not in policy.allowed_hosts and f"{target.host}:{target.port}" not in policy.allowed_hosts:
        raise _denied(f"host {target.host} is not allow-listed (MMFEAT_ALLOWED_HOSTS) for {uri}")
    return target


# ---- file:// ----------------------------------------------------------------------------------


def read_capped(read: Callable[[int], bytes], max_bytes: int, what: str) -> bytes:
    """Read until EOF; MediaRejected as soon as more than ``max_bytes`` came (never more than one byte over is read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = read(max_bytes + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise MediaRejected(f"{what} is over the {max_bytes}-byte limit", reason="media_too_large")


def _read_file(path: Path, policy: FetchPolicy) -> bytes:
    """A regular file's bytes. O_NONBLOCK: opening a FIFO returns at once (and is then refused); O_NOFOLLOW and
    a second root check on the opened descriptor close the race with a symlink swapped in after check_uri."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise FetchError(f"cannot open {clean(path)}: {e.strerror}", reason="fetch_failed") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _denied(f"{path} is not a regular file")
        opened = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists(f"/proc/self/fd/{fd}") else path
        if not _under_roots(opened, policy):
            raise _denied(f"{path} resolved outside the allowed roots while being opened")
        if st.st_size > policy.max_bytes:
            raise MediaRejected(f"{clean(path)} is over the {policy.max_bytes}-byte limit", reason="media_too_large")
        return read_capped(lambda n: os.read(fd, min(n, 1 << 20)), policy.max_bytes, clean(path))
    except OSError as e:
        raise FetchError(f"cannot read {clean(path)}: {e.strerror}", reason="fetch_failed") from e
    finally:
        os.close(fd)


# ---- http(s):// --------------------------------------------------------------------------------

_REFUSED_NETS = ("unspecified", "multicast", "link_local", "reserved")


def resolve_allowed(target: Target, policy: FetchPolicy) -> list[tuple[int, tuple[str, int]]]:
    """The addresses of an allow-listed host (``check_uri`` passed), the only name mmfeat ever looks up.

    Addresses a name should never lead to (unspecified, multicast, link-local such as 169.254.169.254,
    reserved) are dropped unless the allow-list names that very address."""
    assert target.host in policy.allowed_hosts or f"{target.host}:{target.port}" in policy.allowed_hosts
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise FetchError(f"cannot resolve {target.host}: {e}", reason="fetch_failed") from e
    out: list[tuple[int, tuple[str, int]]] = []
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        literal = str(ip) == target.host
        if not literal and any(getattr(ip, f"is_{kind}") for kind in _REFUSED_NETS):
            continue
        out.append((family, (str(sockaddr[0]), int(sockaddr[1]))))
    if not out:
        raise FetchError(f"{target.host} resolves to no address that may be fetched from", reason="uri_denied")
    return out


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


def _connect(target: Target, policy: FetchPolicy, deadline: _Deadline) -> socket.socket:
    last: OSError | None = None
    for family, addr in resolve_allowed(target, policy):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.left())
            sock.connect(addr)
            if target.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError("no address to connect to")


def _shutdown(sock: socket.socket, fired: threading.Event) -> None:
    fired.set()
    with contextlib.suppress(OSError):  # the plain socket's shutdown, also under TLS: a blocked read returns at once
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _http_get(target: Target, policy: FetchPolicy) -> bytes:
    deadline = _Deadline(policy.timeout_s)
    fired = threading.Event()
    sock: socket.socket | None = None
    conn: http.client.HTTPConnection | None = None
    watchdog: threading.Timer | None = None
    what = f"GET {clean(target.url, 300)}"
    try:
        sock = _connect(target, policy, deadline)
        watchdog = threading.Timer(deadline.left(), _shutdown, (sock, fired))
        watchdog.daemon = True
        watchdog.start()
        conn = http.client.HTTPConnection(target.host, target.port)
        conn.sock = sock
        conn.request("GET", target.request_target, headers={"User-Agent": "mmfeat", "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise FetchError(f"{what} answered HTTP {resp.status}", reason="fetch_failed")
        length = resp.headers.get("Content-Length")
        if length and length.strip().isdigit() and int(length) > policy.max_bytes:
            raise MediaRejected(f"{what} declares {length} bytes, over the {policy.max_bytes}-byte limit", reason="media_too_large")
        data = read_capped(lambda n: resp.read(min(n, 1 << 16)), policy.max_bytes, what)
        if fired.is_set():  # the watchdog cut the connection: what was read may be truncated
            raise TimeoutError
        return data
    except (FetchError, MediaRejected):
        raise
    except TimeoutError as e:
        raise FetchError(f"{what} took longer than the {policy.timeout_s:g}s deadline", reason="fetch_timeout") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        if fired.is_set():
            raise FetchError(f"{what} took longer than the {policy.timeout_s:g}s deadline", reason="fetch_timeout") from e
        raise FetchError(f"{what} failed: {type(e).__name__}: {clean(e, 200)}", reason="fetch_failed") from e
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if conn is not None:
            conn.close()  # the response's file and the socket
        elif sock is not None:
            sock.close()


def fetch_media(upload: Upload, policy: FetchPolicy) -> bytes:
    """The upload's media bytes, or a FetchError / MediaRejected naming what was wrong."""
    if upload.media_b64 is not None:
        if len(upload.media_b64) > policy.max_bytes * 4 // 3 + 4:
            raise MediaRejected(f"inline media is over the {policy.max_bytes}-byte limit", reason="media_too_large")
        data = upload.inline_bytes()
        if len(data) > policy.max_bytes:
            raise MediaRejected(f"inline media is over the {policy.max_bytes}-byte limit", reason="media_too_large")
        return data
    assert upload.media_uri is not None
    target = check_uri(upload.media_uri, policy)
    if target.path is not None:
        return _read_file(target.path, policy)
    return _http_get(target, policy)
