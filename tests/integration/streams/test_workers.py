"""Several profiles app workers in one group on the real broker: a worker added and a worker SIGKILLed mid-stream,
and the final profiles still equal a recomputation from the log (no engagement lost or counted twice); a lookup sent
to any worker answers with the owner's profile, and 503 only while the group rebalances."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmfeat.cli.produce import send_records
from mmfeat.cli.services import free_port
from mmfeat.kafka.client import ensure_topics
from mmfeat.profile import ProfileState
from mmfeat.settings import Settings
from mmfeat.topics import app_topics
from streams.offline import recompute_profiles
from streams.rules import profile_config
from tests.integration.conftest import wait_for
from tests.integration.profiles import ProfilesApp, features, http_status, item_tokens, mismatches, send_engagements


def group(ps: Settings, tmp_path: Path, partitions: int) -> Settings:
    """This test's own topics with ``partitions`` partitions (the fixture's have 2) and a quick session timeout."""
    prefix = ps.topics.uploads_topic.split(".")[0] + f"w{partitions}"
    s = ps.updated({
        "engagements_topic": f"{prefix}.engagements", "profiles_topic": f"{prefix}.user.profiles.v1",
        "features_topic": f"{prefix}.media.item-features.v1", "profiles_app_id": f"{prefix}-profiles",
        "profiles_partitions": partitions, "profiles_session_timeout_s": 6.0, "profiles_batch_max": 50,
    })  # fmt: skip
    ensure_topics(s, app_topics(s))
    return s


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[ProfilesApp]]:
    started: list[ProfilesApp] = []
    yield started
    for w in started:
        w.stop(signal.SIGKILL)


def start(s: Settings, tmp_path: Path, started: list[ProfilesApp]) -> ProfilesApp:
    k = len(started)
    w = ProfilesApp(
        s.updated({"profiles_data_dir": tmp_path / f"faust-{k}", "profiles_web_port": free_port()}), tmp_path / f"worker-{k}.log"
    )
    w.start()
    started.append(w)
    return w


def serves(w: ProfilesApp, user: str) -> bool:
    """Whether ``w`` answers ``user``'s profile (not while it starts or rebalances)."""
    return http_status(f"{w.url}/profiles/{user}") == 200


def converged(alive: list[ProfilesApp], truth: dict[str, ProfileState], timeout_s: float) -> Counter[int]:
    """Wait until every live worker answers every user with the recomputed profile; return the statuses seen meanwhile."""
    seen: Counter[int] = Counter()
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        for w in alive:
            seen.update(http_status(f"{w.url}/profiles/{u}") for u in list(truth)[:3])
        last = [f"{w.url}: {m}" for w in alive for m in mismatches(w, truth)]
        return not last

    try:
        wait_for(ok, timeout_s, "every worker to answer the recomputed profiles")
    except AssertionError as e:
        raise AssertionError(f"{e}; still different: {last[:5]}\n{alive[0].log_text()[-3000:]}") from None
    return seen


@pytest.mark.parametrize("n_workers", [2, 4])
def test_workers_added_and_killed_mid_stream_lose_and_double_count_nothing(
    ps: Settings, tmp_path: Path, workers: list[ProfilesApp], n_workers: int
) -> None:
    s = group(ps, tmp_path, partitions=4)
    items = item_tokens(20)
    send_records(s, features(s, items))
    first = start(s, tmp_path, workers)
    send_engagements(s, users=30, items=list(items), n=600, seed=11)
    wait_for(lambda: serves(first, "u0"), 120, "the first worker's first profiles")
    for _ in range(n_workers - 1):  # workers added mid-stream
        start(s, tmp_path, workers)
    send_engagements(s, users=30, items=list(items), n=600, seed=12)
    victim = workers[-1] if n_workers > 2 else workers[0]
    wait_for(lambda: serves(victim, "u1"), 120, "the worker to be killed to answer")
    victim.stop(signal.SIGKILL)  # mid-stream: the rest takes its partitions over, from the changelogs
    send_engagements(s, users=30, items=list(items), n=600, seed=13)
    alive = [w for w in workers if w is not victim]

    truth = recompute_profiles(s, profile_config(s))
    assert sum(p.applied for p in truth.values()) == 1800
    converged(alive, truth, 240)
    # settled: every live worker answers every user with the owner's profile, and nothing answers 503 any more
    final = Counter(http_status(f"{w.url}/profiles/{u}") for w in alive for u in truth)
    assert final == Counter({200: len(alive) * len(truth)})
