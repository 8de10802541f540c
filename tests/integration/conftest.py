"""Integration fixtures: ONE real Kafka broker and ONE real Triton server per test session
(or the ones named by MMFEAT_BOOTSTRAP_SERVERS / MMFEAT_TRITON_URL), unique topics and group per test."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from captioner.modeling.hf_blip2 import make_untrained_captioner
from mmfeat.cli import services
from mmfeat.kafka.client import ensure_topics, high_watermark, make_consumer
from mmfeat.kafka.reader import TopicRecord, read_topic
from mmfeat.settings import DEFAULT_CAPTIONER, PROJECT_ROOT, Settings, load_settings
from mmfeat.topics import app_topics, upload_topics
from readers.asr import make_untrained_whisper
from tests import resolver_guard

OPENCLIPART = Path("/usr/share/openclipart/png")

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Stack:
    settings: Settings
    model_dir: Path
    model_repository: Path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    model_dir = state / "captioner-untrained"
    make_untrained_captioner(model_dir)
    repo = services.render_model_repository(state / "model_repository", model_dir)
    services.render_model_repository(repo, DEFAULT_CAPTIONER, name="captioner_default")  # the trained default, beside it
    for reader in ("ocr", "asr"):  # on-screen text and speech, used only where a test's settings name them
        services.render_reader_model(repo, reader)
    make_untrained_whisper(state / "whisper-untrained")  # the HF path of ASR, behind the same contract
    services.render_reader_model(repo, "asr", name="asr_whisper", model_dir=state / "whisper-untrained")
    s = services.with_free_ports(load_settings(state_dir=state))
    services.up(s, model_repositories=[repo], log=print)
    try:
        yield Stack(services.resolve(s), model_dir, repo)
    finally:
        services.down(s, log=print)


def upload_settings(base: Settings, prefix: str, tmp_path: Path) -> Settings:
    """``base`` with the caption worker's topics and group named after ``prefix``, its store in ``tmp_path``."""
    return base.updated(
        {
            "uploads_topic": f"{prefix}.media.uploads",
            "features_topic": f"{prefix}.media.item-features.v1",
            "deferred_topic": f"{prefix}.media.uploads.deferred",
            "dlq_topic": f"{prefix}.media.uploads.dlq",
            "group_id": f"{prefix}-worker",
            "dedupe_path": tmp_path / "dedupe",
            "allowed_roots": [OPENCLIPART, tmp_path],
            "batch_size": 8,
            "triton_retries": 1,
            "worker_metrics_port": 0,  # several workers per test process: /metrics only where a test asks
            "backfill_metrics_port": 0,
        }
    )


def profile_settings(base: Settings, prefix: str, tmp_path: Path) -> Settings:
    """``base`` with the profiles app's topics, app id, state folder and web port named after ``prefix``; every token
    published."""
    return base.updated(
        {
            "engagements_topic": f"{prefix}.engagements",
            "profiles_topic": f"{prefix}.user.profiles.v1",
            "engagements_dlq_topic": f"{prefix}.engagements.dlq",
            "unmatched_topic": f"{prefix}.engagements.unmatched",
            "profiles_app_id": f"{prefix}-profiles",
            "profiles_data_dir": tmp_path / "faust",
            "profiles_web_port": services.free_port(),
            "profile_top_k": 1000,  # compare whole profiles, not a top-K cut that float ties could reorder
            "profiles_partitions": 2,
            "half_life_s": 3600.0,
            "metrics_interval_s": 0.5,
            "profile_emit_interval_s": 0.0,  # a profile record per engagement: the tests count and match them
        }
    )


@pytest.fixture
def settings(stack: Stack, tmp_path: Path) -> Settings:
    """Settings with topics and a consumer group of this test's own, created with 2 partitions."""
    s = upload_settings(stack.settings, f"t{uuid.uuid4().hex[:10]}", tmp_path)
    ensure_topics(s, upload_topics(s, 2))
    return s


def small_images(n: int, seed: int = 0, max_bytes: int = 60_000) -> list[Path]:
    """``n`` distinct real openclipart drawings under ``max_bytes`` (fast to caption, distinct content)."""
    assert OPENCLIPART.is_dir(), "Debian's openclipart-png is needed (make sysdeps installs it)"
    files = sorted(p for p in OPENCLIPART.glob("*/*.png") if not p.is_symlink() and p.stat().st_size <= max_bytes)
    rng = random.Random(seed)
    rng.shuffle(files)
    seen: set[bytes] = set()
    out = []
    for f in files:
        data = f.read_bytes()
        if data not in seen:
            seen.add(data)
            out.append(f)
        if len(out) == n:
            return out
    raise AssertionError(f"only {len(out)} images found")


def records(s: Settings, topic: str) -> list[TopicRecord]:
    return list(read_topic(s, topic, timeout_s=5))


def by_key(recs: list[TopicRecord]) -> dict[str, TopicRecord]:
    return {r.key: r for r in recs if r.key is not None}


def committed_lag(s: Settings) -> int:
    """How many upload records the worker group has not committed past."""
    c = make_consumer(s, s.worker.group_id)
    try:
        meta = c.list_topics(s.topics.uploads_topic, timeout=5).topics[s.topics.uploads_topic]
        parts = [TopicPartition(s.topics.uploads_topic, p) for p in meta.partitions]
        lag = 0
        for tp in c.committed(parts, timeout=10):
            high = high_watermark(c, tp.topic, tp.partition)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """A /metrics page as {(series name, labels): value}."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {(x.name, frozenset(x.labels.items())): x.value for fam in text_string_to_metric_families(text) for x in fam.samples}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


GUARD_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmfeat-resolver-guard-{os.getpid()}.log"


def cli_env(s: Settings) -> dict[str, str]:
    """A subprocess's environment: these settings, the checkout, and the resolver guard (tests/guard/sitecustomize.py)."""
    path = f"{PROJECT_ROOT / 'tests' / 'guard'}:{PROJECT_ROOT}"
    return {**os.environ, **s.to_env(), "PYTHONPATH": path, resolver_guard.LOG_ENV: str(GUARD_LOG)}


@pytest.fixture(autouse=True, scope="session")
def _no_lookup_in_subprocesses() -> Iterator[None]:
    GUARD_LOG.unlink(missing_ok=True)
    yield
    refused = GUARD_LOG.read_text() if GUARD_LOG.exists() else ""
    GUARD_LOG.unlink(missing_ok=True)
    assert refused == "", f"subprocesses looked up names off the machine: {refused}"


def start_cli(s: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`mmfeat <args>` in a subprocess with these settings, output appended to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "mmfeat", *args], env=cli_env(s), stdout=log.open("ab"), stderr=subprocess.STDOUT)


def run_cli(s: Settings, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`mmfeat <args>` to completion with these settings; stdout and stderr captured."""
    return subprocess.run([sys.executable, "-m", "mmfeat", *args], env=cli_env(s), capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def ps(settings: Settings, tmp_path: Path) -> Settings:
    """This test's own engagement topics, app id, state folder and web port; every token published."""
    s = profile_settings(settings, settings.topics.uploads_topic.split(".")[0], tmp_path)
    ensure_topics(s, app_topics(s))
    return s


@pytest.fixture
def app(ps: Settings, tmp_path: Path) -> Iterator[Any]:
    """This test's profiles app (not started): tests/integration/profiles.py's ProfilesApp, SIGKILLed at the end."""
    from tests.integration.profiles import ProfilesApp

    a = ProfilesApp(ps, tmp_path / "profiles.log")
    try:
        yield a
    finally:
        a.stop(signal.SIGKILL)
