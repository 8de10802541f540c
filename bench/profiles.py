"""`mmfeat bench profiles`: the Faust profiles app vs a raw aiokafka consumer of the same engagement topic.

1. Backlog: N engagements (and their items' features) are on the topic before anything starts. A bare
   aiokafka consumer reads them (the baseline), a Faust agent that only counts them (the floor of any
   Faust app, bench/faust_floor.py), then the profiles app works through them; its rate is N over the
   span between its first and last profile record (start-up excluded).
2. Under load: with the app caught up, engagements are produced at a fixed rate (a quarter, then half
   of the measured backlog rate) and each profile record is matched, by ``last_engagement_id``, to the engagement that
   produced it: engagement-to-profile latency = profile record timestamp - engagement record timestamp.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from mmfeat.cli.demo import percentile
from mmfeat.cli.produce import engagement_records, send_records, synthetic_engagements
from mmfeat.cli.services import free_port
from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import DeliveryTracker, OutRecord, ensure_topics, topic_size
from mmfeat.kafka.reader import read_topic
from mmfeat.settings import PROJECT_ROOT, Settings
from mmfeat.topics import app_topics
from streams.client import profiles_app


async def _aiokafka_rate(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        got, start, first = 0, 0.0, 0
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            k = sum(len(b) for b in batches.values())
            if k and not got:  # the clock starts once the first batch is in (connection set-up excluded)
                start, first = time.perf_counter(), k
            got += k
        return (n - first) / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def aiokafka_consume_rate(s: Settings, topic: str, n: int) -> float:
    """Records/s of a bare aiokafka consumer (the client Faust itself uses) reading ``n`` records from the start."""
    assert s.kafka.bootstrap_servers
    return asyncio.run(_aiokafka_rate(s.kafka.bootstrap_servers, topic, n))


def faust_floor_rate(s: Settings, topic: str, n: int, tmp: Path) -> float:
    """Events/s of a Faust agent that only counts the events of ``topic``: what Faust itself costs."""
    assert s.kafka.bootstrap_servers
    out = tmp / "floor.json"
    cmd = [sys.executable, "-m", "bench.faust_floor", s.kafka.bootstrap_servers, topic, str(n), str(out), str(tmp / "floor")]
    with (tmp / "floor.log").open("ab") as log:
        subprocess.run(
            cmd, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=True
        )
    got = json.loads(out.read_text())
    return float(got["events"]) / float(got["seconds"])


def _wait_profiles(s: Settings, target: int, desc: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    with tqdm(total=target, desc=desc, unit="upd", file=sys.stderr) as bar:
        while (got := topic_size(s, s.topics.profiles_topic)) < target:
            bar.update(got - bar.n)
            if time.monotonic() > deadline:
                raise RuntimeError(f"profiles app wrote {got} of {target} profile records in {timeout_s}s")
            time.sleep(0.5)
        bar.update(got - bar.n)


def _paced(s: Settings, evs: list[EngagementV1], rate: float) -> None:
    """Send engagements at ``rate`` per second, event time = send time, through one producer (a new idempotent
    producer waits for its producer id, and its first records would carry that wait as latency)."""
    tracker = DeliveryTracker.of(s)
    start = time.perf_counter()
    chunk = max(1, int(rate / 20))
    for i in range(0, len(evs), chunk):
        now = datetime.now(UTC)
        batch = [e.model_copy(update={"ts": now}) for e in evs[i : i + chunk]]
        tracker.produce_all(engagement_records(s, batch), s.kafka.delivery_timeout_s)
        ahead = start + (i + chunk) / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


def _latencies(s: Settings, id_prefix: str) -> list[float]:
    """Seconds from each engagement record (ids starting with ``id_prefix``) to the profile record it produced."""
    produced = {
        json.loads(r.value or b"{}").get("event_id"): r.timestamp_ms for r in read_topic(s, s.topics.engagements_topic, timeout_s=5)
    }
    out = []
    for r in read_topic(s, s.topics.profiles_topic, timeout_s=5):
        eid = json.loads(r.value or b"{}").get("last_engagement_id")
        if isinstance(eid, str) and eid.startswith(id_prefix) and eid in produced:
            out.append((r.timestamp_ms - produced[eid]) / 1000)
    return out


def bench_profiles(s: Settings, n: int, load_n: int, users: int = 500, items: int = 300) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-bench-profiles-"))
    s = s.updated(
        {
            "profiles_app_id": f"bench-profiles-{time.time_ns()}",
            "profiles_data_dir": tmp / "faust",
            "profiles_web_port": free_port(),
            "engagements_topic": "bench.engagements",
            "profiles_topic": "bench.user.profiles.v1",
            "features_topic": "bench.item-features",
        }
    )
    ensure_topics(s, app_topics(s))
    item_ids = [f"it-{i}" for i in range(items)]
    feats = [
        OutRecord(
            s.topics.features_topic,
            it,
            json.dumps({"item_id": it, "token_ids": {"word": [2 + (i * k) % 160 for k in range(1, 9)]}}).encode(),
        )
        for i, it in enumerate(item_ids)
    ]
    send_records(s, feats)
    user_ids = [f"u{i}" for i in range(users)]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with tqdm(total=n, desc="produce", unit="rec", file=sys.stderr) as bar:
        evs = synthetic_engagements(user_ids, item_ids, n, seed=1, start=start, spacing_s=1.0, shuffle_s=600.0)
        send_records(s, engagement_records(s, evs), progress=lambda k: bar.update(k - bar.n), chunk=1000)
    raw = aiokafka_consume_rate(s, s.topics.engagements_topic, n)
    floor = faust_floor_rate(s, s.topics.engagements_topic, n, tmp)

    with profiles_app(s, tmp / "profiles.log"):
        _wait_profiles(s, n, "profiles (backlog)")
        stamps = [r.timestamp_ms for r in read_topic(s, s.topics.profiles_topic, timeout_s=5)]
        app_rate = (n - 1) / ((max(stamps) - min(stamps)) / 1000)

        loads = []
        done = n
        for seed, frac in ((2, 0.25), (3, 0.5)):
            rate = max(10.0, round(app_rate * frac))
            _paced(s, list(synthetic_engagements(user_ids, item_ids, load_n, seed=seed, start=start)), rate)
            done += load_n
            _wait_profiles(s, done, f"profiles (load {frac:.0%})")
            lat = _latencies(s, f"ev-{seed}-")
            assert len(lat) >= load_n * 0.9, f"matched {len(lat)} of {load_n} engagements to profile records"
            loads.append({
                "fraction_of_backlog_rate": frac, "rate_per_s": rate, "engagements": load_n, "matched": len(lat),
                "latency_p50_s": round(percentile(lat, 50), 3), "latency_p99_s": round(percentile(lat, 99), 3),
            })  # fmt: skip
    return {
        "engagements": n, "users": users, "items": items,
        "aiokafka_consume_per_s": round(raw, 1), "profile_updates_per_s": round(app_rate, 1),
        "ratio": round(app_rate / raw, 4), "goal_ratio": 0.25, "stretch_ratio": 0.5,
        "faust_count_only_per_s": round(floor, 1), "ratio_vs_faust_count_only": round(app_rate / floor, 3),
        "under_load": loads,
        "notes": "4 partitions; word-token features of 8 ids per item; one profile record per engagement; "
                 "app rate = N / (last - first profile record timestamp); latency = profile record - engagement record timestamp, "
                 "under paced loads at 25% and 50% of the backlog rate; broker, app and load generator share the machine's cores",
    }  # fmt: skip
