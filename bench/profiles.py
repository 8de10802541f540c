"""`mmfeat bench profiles`: the Faust profiles app side by side with a Faust agent that only counts the same topic.

1. Backlog: N engagements (and their items' features) are on the topic before anything starts. A bare aiokafka
   consumer reads them, a Faust agent that only counts them (the floor of any Faust app, bench/faust_floor.py),
   then the profiles app works through them: its rate is N over the span from its first profile record to the
   record at which every engagement is applied (start-up excluded). Then the same with two app workers.
2. Under load: with the app caught up, engagements are produced at a fixed share of the backlog rate (50%, 80%,
   95%), each for a minute, event time = send time. Each engagement's latency is from its record to the first
   profile record that reflects it (the user's record whose ``source_offsets`` passed it); the end-to-end lag
   (engagements produced but not yet in a published profile) is sampled every two seconds.
3. History: users with about 10, 1,000 and 10,000 engagements already applied get the same number of new ones;
   the update rate of each, and the state bytes per user (the profiles changelog's record size).
Profiles are published at the default emit interval; the broker, the apps and the load generator share the cores.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from tqdm import tqdm

from mmfeat.cli.demo import percentile
from mmfeat.cli.produce import engagement_records, send_records, synthetic_engagements
from mmfeat.cli.services import free_port
from mmfeat.kafka.client import OutRecord, ensure_topics
from mmfeat.kafka.config import connection_config
from mmfeat.kafka.reader import read_topic
from mmfeat.settings import PROJECT_ROOT, Settings
from mmfeat.topics import app_topics, internal_topics
from streams.client import profiles_app

START = datetime(2026, 11, 1, tzinfo=UTC)


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


def faust_floor_rate(s: Settings, topic: str, n: int, tmp: Path, batched: bool = False) -> float:
    """Events/s of a Faust agent that only counts the events of ``topic``: what Faust itself costs (``batched``: counting
    micro-batches of events, as the profiles app's ingest takes them)."""
    assert s.kafka.bootstrap_servers
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / f"floor-{batched}.json"
    cmd = [sys.executable, "-m", "bench.faust_floor", s.kafka.bootstrap_servers, topic, str(n), str(out), str(tmp / f"floor-{batched}")]
    cmd += ["batched"] if batched else []
    with (tmp / "floor.log").open("ab") as log:
        subprocess.run(
            cmd, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=True
        )
    got = json.loads(out.read_text())
    return float(got["events"]) / float(got["seconds"])


@dataclass
class ProfileWatch:
    """Follows the profiles topic: per user, each record's timestamp, engagement count and source offsets."""

    s: Settings
    records: dict[str, list[tuple[int, int, dict[str, int]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.consumer = Consumer(connection_config(self.s) | {"group.id": "bench-watch", "enable.auto.commit": False})
        topic = self.s.topics.profiles_topic
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.consumer.consume(500, timeout=0.1):
                raw = m.value()
                if m.error() is None and raw:
                    v = json.loads(raw)
                    self.records.setdefault(v["user_id"], []).append((m.timestamp()[1], int(v["engagements"]), v["source_offsets"]))

    def applied(self) -> int:
        return sum(rs[-1][1] for rs in self.records.values())

    def wait_applied(self, target: int, desc: str, timeout_s: float = 900) -> tuple[int, int]:
        """Poll until ``target`` engagements are applied; return (first record's ms, the completing record's ms)."""
        deadline = time.monotonic() + timeout_s
        with tqdm(total=target, desc=desc, unit="eng", file=sys.stderr) as bar:
            while (got := self.applied()) < target:
                bar.update(got - bar.n)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"profiles app applied {got} of {target} engagements in {timeout_s}s")
                self.poll()
            bar.update(got - bar.n)
        first = min(ts for rs in self.records.values() for ts, _, _ in rs)
        done = max(rs[-1][0] for rs in self.records.values())
        return first, done

    def close(self) -> None:
        self.consumer.close()


def latencies(watch: ProfileWatch, engagements: list[tuple[str, int, int, int]]) -> list[float]:
    """Seconds from each (user, partition, offset, record ms) engagement to the first profile record that reflects it."""
    marks: dict[tuple[str, int], tuple[list[int], list[int]]] = {}  # (user, partition) -> records' offsets, their ms
    for user, records in watch.records.items():
        for ts, _, offsets in records:  # a user's source offsets only grow, record after record
            for part, off in offsets.items():
                got = marks.setdefault((user, int(part)), ([], []))
                got[0].append(off)
                got[1].append(ts)
    out = []
    for user, source, offset, ms in engagements:
        offs, times = marks.get((user, source), ([], []))
        k = bisect.bisect_right(offs, offset)  # the first record whose next offset passed this one
        if k < len(offs):
            out.append((times[k] - ms) / 1000)
    return out


EVENTS = ("view", "like", "time_spent", "comment", "share")
EVENT_WEIGHTS = (8.0, 4.0, 3.0, 1.0, 1.0)


def _paced(
    s: Settings, watch: ProfileWatch, users: list[str], items: list[str], rate: float, seconds: float, seed: int
) -> tuple[list[tuple[str, int, int, int]], list[int]]:
    """Produce engagements at ``rate`` per second for ``seconds`` (event time = send time, each its own event id),
    following the profiles topic in between. The generator formats records itself (pydantic per record would take a
    good share of a core at these rates). Returns each engagement's (user, partition, offset, record ms), and the
    end-to-end lag (produced, not yet in a published profile) sampled every two seconds."""
    rng = random.Random(seed)
    producer = Producer(connection_config(s) | {"linger.ms": 5, "enable.idempotence": True, "compression.type": "lz4"})
    coords: list[tuple[str, int, int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            coords.append((msg.key().decode(), msg.partition(), msg.offset(), msg.timestamp()[1]))

    topic, lags, base = s.topics.engagements_topic, [], watch.applied()
    start, i, next_lag = time.perf_counter(), 0, 2.0
    chunk = max(1, int(rate / 50))
    while (elapsed := time.perf_counter() - start) < seconds:
        ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for event in rng.choices(EVENTS, EVENT_WEIGHTS, k=chunk):
            user = rng.choice(users)
            value = round(rng.uniform(1, 120), 1) if event == "time_spent" else 1.0
            item = rng.choice(items)
            rec = f'{{"user_id":"{user}","item_id":"{item}","event":"{event}","value":{value},"ts":"{ts}","event_id":"load-{seed}-{i}"}}'
            producer.produce(topic, rec.encode(), key=user.encode(), on_delivery=delivered)
            i += 1
        producer.poll(0)
        if elapsed > next_lag:
            lags.append(i - (watch.applied() - base))
            next_lag += 2.0
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            watch.poll(ahead)
    if producer.flush(60):
        raise RuntimeError("the load generator's engagements were not all delivered")
    return coords, lags


@contextmanager
def apps(s: Settings, tmp: Path, n: int) -> Iterator[list[Settings]]:
    """``n`` profiles app workers in one group, each with its own data dir and web port."""
    tmp.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        workers = []
        for k in range(n):
            w = s.updated({"profiles_data_dir": tmp / f"faust-{k}", "profiles_web_port": free_port()})
            stack.enter_context(profiles_app(w, tmp / f"profiles-{k}.log"))
            workers.append(w)
        yield workers


def world(s: Settings, users: int, items: int, n: int, seed: int, tag: str) -> tuple[Settings, list[str], list[str]]:
    """Topics of their own (app id, engagements, profiles, features) with the items' features and N engagements on them."""
    s = s.updated({
        "profiles_app_id": f"bench-{tag}-{time.time_ns()}", "engagements_topic": f"bench.{tag}.engagements",
        "profiles_topic": f"bench.{tag}.user.profiles.v1", "features_topic": f"bench.{tag}.item-features",
    })  # fmt: skip
    ensure_topics(s, app_topics(s))
    item_ids = [f"it-{i}" for i in range(items)]
    tokens = {it: [2 + (i * k) % 160 for k in range(1, 9)] for i, it in enumerate(item_ids)}
    feats = [
        OutRecord(s.topics.features_topic, it, json.dumps({"item_id": it, "token_ids": {"word": t}}).encode()) for it, t in tokens.items()
    ]
    send_records(s, feats)
    user_ids = [f"u{i}" for i in range(users)]
    if n:
        with tqdm(total=n, desc=f"produce {tag}", unit="rec", file=sys.stderr) as bar:
            evs = synthetic_engagements(user_ids, item_ids, n, seed=seed, start=START, spacing_s=1.0, shuffle_s=600.0)
            send_records(s, engagement_records(s, evs), progress=lambda k: bar.update(k - bar.n), chunk=1000)
    return s, user_ids, item_ids


def backlog_rate(s: Settings, tmp: Path, n: int, workers: int) -> float:
    watch = ProfileWatch(s)
    try:
        with apps(s, tmp, workers):
            first, done = watch.wait_applied(n, f"profiles backlog, {workers} worker(s)")
        return n / max(1e-9, (done - first) / 1000)
    finally:
        watch.close()


def under_load(
    s: Settings, tmp: Path, users: list[str], items: list[str], rate: float, shares: tuple[float, ...], seconds: float
) -> list[dict[str, Any]]:
    out = []
    watch = ProfileWatch(s)
    try:
        with apps(s, tmp, 1):
            for k, share in enumerate(shares):
                target = max(10.0, round(rate * share))
                before = watch.applied()
                coords, lags = _paced(s, watch, users, items, target, seconds, seed=10 + k)
                watch.wait_applied(before + len(coords), f"profiles at {share:.0%} load")
                lat = latencies(watch, coords)
                out.append({
                    "fraction_of_backlog_rate": share, "rate_per_s": target, "seconds": seconds, "engagements": len(coords),
                    "matched": len(lat), "latency_p50_s": round(percentile(lat, 50), 3), "latency_p99_s": round(percentile(lat, 99), 3),
                    "latency_max_s": round(max(lat, default=0.0), 3), "lag_max": max(lags, default=0), "lag_last": lags[-1] if lags else 0,
                    # bounded: the lag at the end is no larger than in the first third, plus a second of load
                    "lag_bounded": bool(lags) and lags[-1] <= max(lags[: max(1, len(lags) // 3)]) + target,
                })  # fmt: skip
    finally:
        watch.close()
    return out


def state_bytes(s: Settings, users: list[str]) -> float:
    """Mean size of the users' latest records on the profiles table's changelog."""
    topic = internal_topics(s)["profiles"]
    wanted, sizes = set(users), {}
    for r in read_topic(s, topic, timeout_s=5):
        if r.key in wanted and r.value is not None:
            sizes[r.key] = len(r.value)
    return sum(sizes.values()) / max(1, len(sizes))


def history_point(s: Settings, tmp: Path, h: int, new: int, tag: str) -> tuple[float, float]:
    """20 users with ``h`` engagements applied each, then ``new`` more to the same users: (updates/s, state bytes per
    user). The same users at every size: the same batching, only the history differs."""
    users = 20
    w, user_ids, item_ids = world(s, users, 300, users * h, seed=20, tag=tag)
    watch = ProfileWatch(w)
    try:
        with apps(w, tmp / tag, 1):
            watch.wait_applied(users * h, f"history {h}: preload")
            evs = list(synthetic_engagements(user_ids, item_ids, new, seed=21, start=START, spacing_s=1.0))
            evs = [e.model_copy(update={"event_id": f"new-{h}-{i}"}) for i, e in enumerate(evs)]
            began = time.time() * 1000
            send_records(w, engagement_records(w, evs), chunk=1000)
            _, done = watch.wait_applied(users * h + new, f"history {h}: {new} new")
        return new / max(1e-9, (done - began) / 1000), state_bytes(w, user_ids)
    finally:
        watch.close()


def history_sweep(s: Settings, tmp: Path, sizes: tuple[int, ...], new: int) -> list[dict[str, Any]]:
    """Each history size twice, the sweep forward then backward, so that a slow phase of the shared machine does not
    land on one size only; each size's rate is the mean of its two runs."""
    runs: dict[int, list[float]] = {h: [] for h in sizes}
    size: dict[int, float] = {}
    for k, h in enumerate([*sizes, *reversed(sizes)]):
        rate, size[h] = history_point(s, tmp, h, new, tag=f"hist{h}-{k}")
        runs[h].append(rate)
    return [
        {"history": h, "users": 20, "new_engagements": new, "updates_per_s": round(sum(r) / len(r), 1),
         "runs_updates_per_s": [round(x, 1) for x in r], "state_bytes_per_user": round(size[h], 1)}
        for h, r in runs.items()
    ]  # fmt: skip


def bench_profiles(s: Settings, n: int, load_s: float, history_new: int, users: int = 500, items: int = 300) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-bench-profiles-"))
    w, user_ids, item_ids = world(s, users, items, n, seed=1, tag="backlog")
    raw = aiokafka_consume_rate(w, w.topics.engagements_topic, n)
    floor = faust_floor_rate(w, w.topics.engagements_topic, n, tmp)
    one = backlog_rate(w, tmp / "one", n, 1)
    w2 = w.updated({"profiles_app_id": f"{w.profiles.profiles_app_id}-two", "profiles_topic": f"{w.topics.profiles_topic}.two"})
    ensure_topics(w2, app_topics(w2))
    two = backlog_rate(w2, tmp / "two", n, 2)
    w3, _, _ = world(s, users, items, 0, seed=3, tag="load")
    sweep = history_sweep(s, tmp, (10, 1000, 10_000), history_new)  # before the loads, which leave the broker busy
    loads = under_load(w3, tmp / "load", user_ids, item_ids, one, (0.5, 0.8, 0.95), load_s)
    rates = [h["updates_per_s"] for h in sweep]
    return {
        "engagements": n, "users": users, "items": items, "emit_interval_s": s.profiles.profile_emit_interval_s,
        "aiokafka_consume_per_s": round(raw, 1), "faust_count_only_per_s": round(floor, 1),
        "profile_updates_per_s": round(one, 1), "ratio_vs_faust_count_only": round(one / floor, 3), "goal_ratio": 0.7,
        "goal_updates_per_s": 10_000, "ratio_vs_aiokafka": round(one / raw, 4),
        "two_workers_updates_per_s": round(two, 1), "two_vs_one": round(two / one, 3),
        "under_load": loads, "history": sweep, "history_rate_spread": round(max(rates) / min(rates), 3), "goal_history_spread": 1.5,
        "notes": "4 partitions; word-token features of 8 ids per item; profiles coalesced at the default emit interval; "
                 "app rate = N / (first profile record -> the record completing N applied); latency = engagement record -> first "
                 "profile record whose source_offsets pass it; broker, apps and load generator share the machine's cores",
    }  # fmt: skip
