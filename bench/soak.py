"""`mmfeat bench soak --minutes N`: the whole stack under a steady load for N minutes, on a 3-node Kafka cluster.

Three KRaft nodes and Triton (the default captioner) from `mmfeat up`, two caption workers and two profiles apps as
processes of their own. Uploads and engagements go in at steady rates; every few seconds the bench samples each
process's resident memory (Triton with its Python stubs, a node's JVM, ...), the consumer lag of the caption workers'
group and of the profiles ingest's, and upload-to-feature freshness (a feature record's broker timestamp minus its
upload's ``created_at``). Then the load stops, the stack drains, and loss is counted: every upload must have exactly
one feature record or DLQ record, and both profiles apps must answer every user with the profile recomputed offline
from the topics (streams/offline.py). Results: results/bench_soak.json and results/bench_soak.png.

Goals after the warm-up (the first sixth of the run, at least a minute): every process's RSS grows under 10% (the
mean of the last tenth against the mean of the first tenth after warm-up), lag stays bounded (the highest lag of
the last third at most 1.2 times that of the first third, plus one batch: a lag that grows steadily fails), zero
loss.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmfeat.cli import services
from mmfeat.cli.demo import percentile
from mmfeat.cli.produce import send_records, send_uploads, synthetic_uploads
from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import DeliveryTracker, OutRecord, committed_offsets, ensure_topics, make_consumer, partition_ends
from mmfeat.kafka.reader import read_topic
from mmfeat.settings import DEFAULT_CAPTIONER, PROJECT_ROOT, Settings, load_settings
from mmfeat.topics import app_topics, upload_topics
from streams.client import served_mismatches
from streams.offline import recompute_profiles
from streams.rules import profile_config

USERS = 200
PARTITIONS = 4


# ---- processes and their memory -----------------------------------------------------------------


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it (Triton's Python backend stubs are its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total / 1024


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes] | None = None
    pid: int = 0
    url: str = ""


def start_cli(s: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **s.to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mmfeat", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


# ---- lag and freshness --------------------------------------------------------------------------


def group_lag(s: Settings, group: str, topic: str) -> int:
    """Records of ``topic`` that ``group`` has not committed past."""
    ends = partition_ends(s, topic)
    got = committed_offsets(s, group, topic, ends)
    return sum(end - got.get(p, 0) for p, end in ends.items())


@dataclass
class Freshness:
    """Follows the feature topic: each record's broker timestamp minus its upload's created_at."""

    s: Settings
    sent_at: dict[str, float]  # item id -> created_at (epoch s), filled by the producer
    seen: Counter[str] = field(default_factory=Counter)
    window: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        c = make_consumer(self.s, f"bench-soak-follow-{time.time_ns()}")
        c.subscribe([self.s.topics.features_topic])
        while not self.stop.is_set():
            for m in c.consume(num_messages=500, timeout=0.5):
                key = m.key()
                if m.error() is not None or key is None:
                    continue
                item = key.decode()
                self.seen[item] += 1
                created = self.sent_at.get(item)
                if created is not None and self.seen[item] == 1:
                    self.window.append(m.timestamp()[1] / 1000 - created)
        c.close()

    def take(self) -> list[float]:
        got, self.window = self.window, []
        return got


# ---- the run ------------------------------------------------------------------------------------


def engagements(items: list[str], rng: random.Random, n: int, seq: int) -> list[EngagementV1]:
    now = datetime.now(UTC)
    return [
        EngagementV1(
            user_id=f"u{rng.randrange(USERS):03d}", item_id=rng.choice(items), event=rng.choice(("like", "view", "share", "comment")),
            value=1.0, ts=now - timedelta(milliseconds=10 * i), event_id=f"soak-{seq + i:08d}",
        )
        for i in range(n)
    ]  # fmt: skip


def bench_soak(minutes: float, upload_rate: float = 2.0, engagement_rate: float = 50.0, sample_s: float = 5.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-soak-"))
    repo = tmp / "repo"
    services.render_model_repository(repo, DEFAULT_CAPTIONER)
    base = services.with_free_ports(load_settings(state_dir=tmp / "state"))
    port, controller = services.free_cluster_ports(3, avoid=[int(v) for k, v in base.flat().items() if k in services.PORT_SETTINGS])
    base = base.updated({"kafka_brokers": 3, "kafka_port": port, "kafka_controller_port": controller})
    procs: list[Proc] = []
    kept = True
    try:
        services.up(base, model_repositories=[repo], log=lambda m: print(m, file=sys.stderr))
        s = services.resolve(base).updated({"budget_rate_per_s": 1e9, "budget_burst": 10**9})
        ensure_topics(s, [*upload_topics(s, PARTITIONS), *app_topics(s)])
        ep = services.Endpoints.load(s.services.state_dir)
        procs += [Proc(f"kafka-{i}", pid=pid) for i, pid in enumerate(ep.kafka_pids, 1)]
        procs.append(Proc("triton", pid=ep.triton_pid or 0))
        ports = services.free_ports(4)
        for i in (1, 2):
            w = s.updated({"worker_metrics_port": ports[i - 1]})
            p = start_cli(w, tmp / f"worker-{i}.log", "worker")
            procs.append(Proc(f"worker-{i}", p, p.pid))
        for i in (1, 2):
            a = s.updated({"profiles_web_port": ports[1 + i], "profiles_data_dir": tmp / f"faust-{i}", "profiles_partitions": PARTITIONS})
            p = start_cli(a, tmp / f"profiles-{i}.log", "profiles")
            procs.append(Proc(f"profiles-{i}", p, p.pid, f"http://127.0.0.1:{ports[1 + i]}"))
        doc = _run(s, procs, minutes, upload_rate, engagement_rate, sample_s, tmp)
        kept = not all(doc["goals"].values())
        doc["logs"] = str(tmp) if kept else None  # a run that missed a goal keeps its processes' logs
        return doc
    except BaseException:
        kept = True
        print(f"soak: logs kept in {tmp}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            if proc.popen is not None:
                proc.popen.terminate()
                try:
                    proc.popen.wait(60)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
        services.down(base, log=lambda m: print(m, file=sys.stderr))
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(
    s: Settings, procs: list[Proc], minutes: float, upload_rate: float, engagement_rate: float, sample_s: float, tmp: Path
) -> dict[str, Any]:
    rng = random.Random(5)
    sent_at: dict[str, float] = {}
    fresh = Freshness(s, sent_at)
    follower = threading.Thread(target=fresh.run, daemon=True)
    follower.start()
    tracker = DeliveryTracker.of(s)  # one producer for the whole run
    stream = synthetic_uploads(10**7, seed=2, prefix="soak")
    sent: list[tuple[float, str]] = []  # (monotonic send time, item id)
    uploads_sent, engagements_sent, seq = 0, 0, 0
    samples: list[dict[str, Any]] = []
    profile_group = f"{s.profiles.profiles_app_id}-ingest"
    duration = minutes * 60
    began = time.monotonic()
    next_sample = began
    tick, last = 1.0, began
    bar = tqdm(total=int(duration), desc="soak", unit="s", file=sys.stderr)
    while (now := time.monotonic()) - began < duration:
        dt, last = now - last, now  # a tick that sampled takes longer: the rates follow the clock, not the ticks
        ups = [next(stream) for _ in range(40 if not sent else _due(upload_rate, dt, rng))]  # a first wave to engage with
        for u in ups:
            sent_at[u.item_id] = time.time()  # send_uploads stamps created_at as it sends, within milliseconds of this
            sent.append((now, u.item_id))
        uploads_sent += send_uploads(s, iter(ups), tracker=tracker)
        # engagements go to items uploaded at least 20 s ago: most have their features, the rest wait for them
        ready = [item for at, item in sent if now - at >= 20] or [item for _, item in sent]
        batch = engagements(ready, rng, _due(engagement_rate, dt, rng), seq)
        seq += len(batch)
        records = [OutRecord(s.topics.engagements_topic, e.user_id, e.model_dump_json(exclude_none=True).encode()) for e in batch]
        engagements_sent += send_records(s, records, tracker=tracker)
        if now >= next_sample:
            f = fresh.take()
            samples.append({
                "t_s": round(now - began, 1),
                "rss_mb": {p.name: round(tree_rss_mb(p.pid), 1) for p in procs},
                "lag_uploads": group_lag(s, s.worker.group_id, s.topics.uploads_topic),
                "lag_engagements": group_lag(s, profile_group, s.topics.engagements_topic),
                "freshness_p50_s": round(statistics.median(f), 3) if f else None,
                "freshness_p99_s": round(percentile(f, 99), 3) if f else None,
                "features": len(fresh.seen),
            })  # fmt: skip
            next_sample += sample_s
            dead = [p.name for p in procs if p.popen is not None and p.popen.poll() is not None]
            if dead:
                raise SystemExit(f"soak: {', '.join(dead)} exited; logs in {tmp}")
        bar.update(int(now - began) - bar.n)
        time.sleep(max(0.0, tick - (time.monotonic() - now)))
    bar.close()
    drained = _drain(s, profile_group)
    fresh.stop.set()
    follower.join(10)
    loss = _loss(s, procs, uploads_sent)
    return _figures(samples, minutes, upload_rate, engagement_rate, sample_s, uploads_sent, engagements_sent, drained, loss)


def _due(rate: float, tick: float, rng: random.Random) -> int:
    """Whole records for one tick at ``rate``/s (the fraction by chance, so the mean is the rate)."""
    whole, frac = divmod(rate * tick, 1.0)
    return int(whole) + (rng.random() < frac)


def _drain(s: Settings, profile_group: str, timeout_s: float = 600) -> dict[str, Any]:
    """Wait for both groups to commit everything sent."""
    t0 = time.monotonic()
    lags = (-1, -1)
    while time.monotonic() - t0 < timeout_s:
        lags = group_lag(s, s.worker.group_id, s.topics.uploads_topic), group_lag(s, profile_group, s.topics.engagements_topic)
        if lags == (0, 0):
            return {"drained_s": round(time.monotonic() - t0, 1), "lag_uploads": 0, "lag_engagements": 0}
        time.sleep(2)
    return {"drained_s": None, "lag_uploads": lags[0], "lag_engagements": lags[1]}


def _loss(s: Settings, procs: list[Proc], uploads: int) -> dict[str, Any]:
    """Exactly one outcome per upload; both profiles apps answer every user with the offline recomputation."""
    features = Counter(r.key for r in read_topic(s, s.topics.features_topic, timeout_s=5))
    dlq = Counter(r.key for r in read_topic(s, s.topics.dlq_topic, timeout_s=5))
    outcomes = features + dlq
    truth = recompute_profiles(s, profile_config(s))
    urls = [p.url for p in procs if p.url]
    deadline = time.monotonic() + 300
    while (bad := served_mismatches(urls, truth)) and time.monotonic() < deadline:
        time.sleep(5)
    return {
        "uploads": uploads, "with_one_outcome": sum(1 for n in outcomes.values() if n == 1), "without_outcome": uploads - len(outcomes),
        "with_several": sum(1 for n in outcomes.values() if n > 1), "dlq": sum(dlq.values()),
        "users": len(truth), "engagements_applied": sum(p.applied for p in truth.values()), "profile_mismatches": bad[:10],
        "zero_loss": len(outcomes) == uploads and all(n == 1 for n in outcomes.values()) and not bad,
    }  # fmt: skip


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def _figures(
    samples: list[dict[str, Any]], minutes: float, upload_rate: float, engagement_rate: float, sample_s: float,
    uploads: int, engagements_sent: int, drained: dict[str, Any], loss: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    warm_s = max(60.0, minutes * 60 / 6)
    after = [x for x in samples if x["t_s"] >= warm_s] or samples
    k = max(1, len(after) // 10)
    growth = {}
    for name in after[0]["rss_mb"]:
        start, end = _mean([x["rss_mb"][name] for x in after[:k]]), _mean([x["rss_mb"][name] for x in after[-k:]])
        growth[name] = {"start_mb": round(start, 1), "end_mb": round(end, 1), "growth": round(end / start - 1, 4) if start else None}
    third = max(1, len(after) // 3)
    lag: dict[str, Any] = {}
    for key, batch in (("lag_uploads", 64), ("lag_engagements", 500)):
        one, three = max((x[key] for x in after[:third]), default=0), max((x[key] for x in after[-third:]), default=0)
        lag[key] = {"max_first_third": one, "max_last_third": three, "bounded": three <= 1.2 * one + batch}
    p99 = [x["freshness_p99_s"] for x in after if x["freshness_p99_s"] is not None]
    worst = max((g["growth"] for g in growth.values() if g["growth"] is not None), default=0.0)
    return {
        "minutes": minutes, "upload_rate_per_s": upload_rate, "engagement_rate_per_s": engagement_rate, "sample_s": sample_s,
        "warm_up_s": warm_s, "uploads": uploads, "engagements": engagements_sent, "rss": growth, "worst_rss_growth": worst,
        "lag": lag, "freshness_p99_s": {"median": round(statistics.median(p99), 3) if p99 else None, "max": max(p99, default=None)},
        "drain": drained, "loss": loss,
        "goals": {"rss_growth_under_10pct": worst < 0.10, "lag_bounded": all(v["bounded"] for v in lag.values()),
                  "zero_loss": loss["zero_loss"]},
        "samples": samples,
        "notes": "3 KRaft nodes (replication 3, min ISR 2), Triton with the default captioner on the CPU, 2 caption workers and "
                 "2 profiles apps as processes; RSS of a process includes its children; lag from committed offsets",
    }  # fmt: skip


def plot(doc: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [x["t_s"] / 60 for x in doc["samples"]]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for name in doc["samples"][0]["rss_mb"]:
        axes[0].plot(xs, [x["rss_mb"][name] for x in doc["samples"]], label=name)
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend(ncol=4, fontsize=8)
    axes[1].plot(xs, [x["lag_uploads"] for x in doc["samples"]], label="caption workers (uploads)")
    axes[1].plot(xs, [x["lag_engagements"] for x in doc["samples"]], label="profiles ingest (engagements)")
    axes[1].set_ylabel("consumer lag (records)")
    axes[1].legend(fontsize=8)
    axes[2].plot(xs, [x["freshness_p50_s"] for x in doc["samples"]], label="p50")
    axes[2].plot(xs, [x["freshness_p99_s"] for x in doc["samples"]], label="p99")
    axes[2].set_ylabel("upload -> feature (s)")
    axes[2].set_xlabel("minutes")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.axvline(doc["warm_up_s"] / 60, color="grey", linestyle=":", linewidth=1)
    g = doc["goals"]
    fig.suptitle(
        f"mmfeat soak: {doc['minutes']:g} min, {doc['upload_rate_per_s']:g} uploads/s + {doc['engagement_rate_per_s']:g} engagements/s; "
        f"worst RSS growth {100 * doc['worst_rss_growth']:.1f}%, lag bounded {g['lag_bounded']}, zero loss {g['zero_loss']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
