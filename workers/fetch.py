"""Fetch an upload's media under a policy that is checked before any connection or file access.

- inline bytes (``media_b64``): size-capped;
- ``file://`` only for real paths (symlinks resolved) under an allowed root;
- ``http(s)://`` only to allow-listed hosts, no redirects, size-capped while streaming.
Anything else is refused with reason ``uri_denied``.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmfeat.errors import FetchError, MediaRejected
from mmfeat.schemas import UploadV1


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
    scheme: str
    path: Path | None = None
    url: str | None = None


def check_uri(uri: str, policy: FetchPolicy) -> Target:
    """Decide whether ``uri`` may be fetched. Pure: no socket is opened and no file is read."""
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError(f"file URI with a host is refused: {uri}", reason="uri_denied")
        path = Path(os.path.realpath(urllib.parse.unquote(parsed.path)))
        if not any(path.is_relative_to(root) for root in policy.allowed_roots):
            roots = ", ".join(map(str, policy.allowed_roots)) or "none configured (MMFEAT_ALLOWED_ROOTS)"
            raise FetchError(f"{uri} is outside the allowed roots ({roots})", reason="uri_denied")
        return Target("file", path=path)
    if scheme in ("http", "https"):
        host = (parsed.hostname or "").lower()
        hostport = f"{host}:{parsed.port}" if parsed.port else host
        if not host or (host not in policy.allowed_hosts and hostport not in policy.allowed_hosts):
            raise FetchError(f"host {host or '?'} is not allow-listed (MMFEAT_ALLOWED_HOSTS) for {uri}", reason="uri_denied")
        return Target(scheme, url=uri)
    raise FetchError(f"URI scheme {scheme or '(none)'!r} is not supported: {uri[:200]}", reason="uri_denied")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect could lead off the allow-list: treat it as an error


_OPENER = urllib.request.build_opener(_NoRedirect)


def _read_capped(stream: object, max_bytes: int, what: str) -> bytes:
    data = stream.read(max_bytes + 1)  # type: ignore[attr-defined]
    if len(data) > max_bytes:
        raise MediaRejected(f"{what} is over the {max_bytes}-byte limit", reason="media_too_large")
    return bytes(data)


def fetch_media(upload: UploadV1, policy: FetchPolicy) -> bytes:
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
        try:
            if target.path.stat().st_size > policy.max_bytes:
                raise MediaRejected(f"{target.path} is over the {policy.max_bytes}-byte limit", reason="media_too_large")
            with open(target.path, "rb") as f:
                return _read_capped(f, policy.max_bytes, str(target.path))
        except OSError as e:
            raise FetchError(f"cannot read {target.path}: {e.strerror}", reason="fetch_failed") from e
    assert target.url is not None
    try:
        with _OPENER.open(urllib.request.Request(target.url, headers={"User-Agent": "mmfeat"}), timeout=policy.timeout_s) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise MediaRejected(
                    f"{target.url} declares {length} bytes, over the {policy.max_bytes}-byte limit", reason="media_too_large"
                )
            return _read_capped(resp, policy.max_bytes, target.url)
    except urllib.error.HTTPError as e:
        raise FetchError(f"GET {target.url} answered HTTP {e.code}", reason="fetch_failed") from e
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"GET {target.url} failed: {getattr(e, 'reason', e)}", reason="fetch_failed") from e
