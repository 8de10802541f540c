"""Client side of the profiles app: its HTTP lookup (`mmfeat profile`, the demo, the tests) and running it as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from mmfeat.errors import MmfeatError, ServiceError
from mmfeat.profile import ProfileState
from mmfeat.schemas import UserProfileV1
from mmfeat.settings import PROJECT_ROOT, Settings


class UnknownUser(MmfeatError):
    """The lookup answered 404: no engagement of this user has been applied."""


def fetch_profile(base_url: str, user_id: str, timeout_s: float = 5.0, token: str | None = None) -> UserProfileV1:
    url = f"{base_url.rstrip('/')}/profiles/{urllib.parse.quote(user_id, safe='')}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return UserProfileV1.model_validate_json(resp.read())
    except urllib.error.HTTPError as e:
        detail = json.loads(e.read() or b"{}").get("error", e.reason)
        if e.code == 404:
            raise UnknownUser(f"{url}: {detail}") from e
        raise ServiceError(f"{url}: HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise ServiceError(f"{url}: the profiles app is not answering ({e}); start it with `mmfeat profiles`") from e


def served_mismatches(urls: Sequence[str], truth: Mapping[str, ProfileState], token: str | None = None) -> list[str]:
    """Each user whose profile, as the app at each of ``urls`` serves it, does not count the engagements ``truth``
    applied (a recomputation, streams/offline.py). An app still starting or rebalancing is a mismatch for now."""
    bad = []
    for url in urls:
        for user, want in sorted(truth.items()):
            try:
                got = fetch_profile(url, user, token=token).engagements
            except UnknownUser:
                got = 0
            except ServiceError:
                got = -1
            if got != want.applied:
                bad.append(f"{url} {user}: {got} engagements, want {want.applied}")
    return bad


@contextmanager
def profiles_app(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`mmfeat profiles` as a subprocess with these settings, output appended to ``log``; stopped on exit
    (SIGTERM, then SIGKILL after a minute)."""
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mmfeat", "profiles"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
