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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmfeat.errors import MmfeatError, ServiceError
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
