"""The profiles app as the integration tests drive it: `mmfeat profiles` as a subprocess, feature records and
engagements to feed it, and the comparison of served profiles with a recomputation from the log."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from mmfeat.cli.produce import engagement_records, send_records, synthetic_engagements
from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import OutRecord
from mmfeat.profile import ProfileState
from mmfeat.schemas import UserProfileV1
from mmfeat.settings import Settings
from streams.client import UnknownUser, fetch_profile
from tests.integration.conftest import start_cli, wait_for

START = datetime(2026, 11, 1, tzinfo=UTC)


class ProfilesApp:
    """`mmfeat profiles` as a subprocess, so it can be SIGKILLed like a real deployment."""

    def __init__(self, s: Settings, log: Path) -> None:
        self.s, self.log = s, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.s.profiles.profiles_web_host}:{self.s.profiles.profiles_web_port}"

    def start(self) -> None:
        self.proc = start_cli(self.s, self.log, "profiles")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.proc = None

    def lookup(self, user_id: str) -> UserProfileV1 | None:
        try:
            return fetch_profile(self.url, user_id, timeout_s=2)
        except UnknownUser:
            return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def features(s: Settings, items: dict[str, list[int]], captioner: str = "cap@1") -> list[OutRecord]:
    """Feature records as the caption worker writes them (only the fields the profiles app reads matter)."""
    versions = {"captioner_version": captioner, "tokenizer_versions": {"word": "w@1"}}
    values = {item: json.dumps({"item_id": item, "token_ids": {"word": toks}, **versions}).encode() for item, toks in items.items()}
    return [OutRecord(s.topics.features_topic, item, v) for item, v in values.items()]


def item_tokens(n: int, prefix: str = "it") -> dict[str, list[int]]:
    return {f"{prefix}-{i}": [2 + i % 7, 10 + i % 5, 20 + i % 11] for i in range(n)}


def send_engagements(s: Settings, users: int, items: list[str], n: int, seed: int) -> list[EngagementV1]:
    evs = list(synthetic_engagements([f"u{i}" for i in range(users)], items, n, seed=seed, start=START, spacing_s=7.0, shuffle_s=900.0))
    assert send_records(s, engagement_records(s, evs)) == n
    return evs


def mismatches(app: ProfilesApp, truth: dict[str, ProfileState]) -> list[str]:
    """Users whose served profile differs from the recomputed one (counts exactly, weights to 1e-9)."""
    bad = []
    for user, want in truth.items():
        try:
            got = app.lookup(user)
        except Exception as e:  # the app may be (re)starting: that is a mismatch for now, not an error
            bad.append(f"{user}: {e}")
            continue
        if got is None or got.engagements != want.applied:
            bad.append(f"{user}: {got and got.engagements} engagements, want {want.applied}")
            continue
        for ev, ws in want.weights.items():
            served = got.events.get(ev)
            if served is None or served.count != want.counts[ev]:
                bad.append(f"{user}/{ev}: count")
                continue
            have = dict(zip(served.token_ids, served.weights, strict=True))
            if set(have) != set(ws) or any(abs(have[t] - w) > 1e-9 * max(1.0, abs(w)) for t, w in ws.items()):
                bad.append(f"{user}/{ev}: weights")
    return bad


def wait_converged(app: ProfilesApp, truth: dict[str, ProfileState], timeout_s: float) -> None:
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        last = mismatches(app, truth)
        return not last

    try:
        wait_for(ok, timeout_s, "served profiles to equal the recomputation")
    except AssertionError as e:
        raise AssertionError(f"{e}; still different: {last[:5]}\n{app.log_text()[-3000:]}") from None


def http_status(url: str) -> int:
    """The answer's status code; 0 when nothing answers (a worker starting, or killed)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
