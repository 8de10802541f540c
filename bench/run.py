"""`mmfeat bench worker|captioner|profiles|backfill|ranker|media`: side-by-side measurements on one machine, in one run.

- worker:    the caption worker's throughput with a trivially fast Triton model (null_captioner)
             vs the raw confluent-kafka consume rate of the same topic.
- captioner: the captioner in Triton with dynamic batching vs the same model executing one
             request at a time, under the same concurrent load: throughput and p50/p99 latency.
- profiles:  the Faust profiles app vs a raw aiokafka consumer of the same engagement topic, and its
             engagement-to-profile latency under a paced load (bench/profiles.py).
- backfill:  an unpaced backfill of the same uploads vs the live worker, and a paced one vs its limit.
- media:     frames captioned per second inside videos vs the same frames sent as images (bench/media.py).
- ranker:    the ranker's training throughput with vs without the MM-LLM features, for over-arches of
             growing size (bench/ranker.py; also results/bench_ranker.png).
- soak:      the whole stack on a 3-node cluster under a steady load for --minutes: memory, lag, freshness and
             loss over time (bench/soak.py; also results/bench_soak.png).
Results go to results/bench_<name>.json with the command, the machine and the date.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from captioner.configuration import read_manifest
from mmfeat.cli import services
from mmfeat.cli.demo import percentile
from mmfeat.cli.produce import list_images, send_uploads, synthetic_uploads
from mmfeat.kafka.client import TopicSpec, ensure_topics, make_consumer
from mmfeat.settings import DEFAULT_CAPTIONER, PROJECT_ROOT, Settings, load_settings
from mmfeat.topics import upload_topics

BENCH_MODELS = Path(__file__).resolve().parent / "triton_models"
OPENCLIPART = Path("/usr/share/openclipart/png")


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_result(out_dir: Path, name: str, figures: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{name}.json"
    doc = {
        "benchmark": name,
        "command": " ".join(["mmfeat", *sys.argv[1:]]) if sys.argv[0].endswith("mmfeat") else f"mmfeat bench {name}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **figures,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


class Stack:
    """Fresh Kafka and/or Triton in a temporary state directory, torn down on exit."""

    def __init__(self, repos: list[Path], kafka: bool = True, triton: bool = True) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mmfeat-bench-"))
        self.settings = services.with_free_ports(load_settings(state_dir=self.tmp / "state"))
        self.repos, self.kafka, self.triton = repos, kafka, triton

    def __enter__(self) -> Settings:
        log = lambda m: print(m, file=sys.stderr)  # noqa: E731
        services.up(self.settings, model_repositories=self.repos, kafka=self.kafka, triton=self.triton, log=log)
        return services.resolve(self.settings)

    def __exit__(self, *exc: object) -> None:
        services.down(self.settings, log=lambda m: print(m, file=sys.stderr))
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- worker vs raw consume ---------------------------------------------------------------------


def raw_consume_rate(s: Settings, topic: str, n: int) -> float:
    """Records/s of a bare confluent-kafka consumer reading ``n`` records of ``topic`` from the start."""
    c = make_consumer(s, f"bench-raw-{time.time_ns()}")
    c.subscribe([topic])
    got, start = 0, None
    while got < n:
        msgs = c.consume(num_messages=500, timeout=1.0)
        if msgs and start is None:
            start = time.perf_counter()
        got += sum(1 for m in msgs if m.error() is None)
    assert start is not None
    elapsed = time.perf_counter() - start
    c.close()
    return n / elapsed


def relay_rate(s: Settings, topic: str, out_topic: str, n: int) -> float:
    """Records/s of the least any at-least-once stage does: consume, produce (acks=all), flush, commit."""
    from mmfeat.kafka.client import DeliveryTracker, OutRecord, commit_offsets

    c = make_consumer(s, f"bench-relay-{time.time_ns()}")
    tracker = DeliveryTracker.of(s)
    c.subscribe([topic])
    got, start = 0, None
    while got < n:
        msgs = [m for m in c.consume(num_messages=64, timeout=1.0) if m.error() is None]
        if not msgs:
            continue
        start = start or time.perf_counter()
        tracker.produce_all([OutRecord(out_topic, (m.key() or b"").decode(), m.value() or b"") for m in msgs], 30)
        commit_offsets(c, msgs)
        got += len(msgs)
    assert start is not None
    elapsed = time.perf_counter() - start
    c.close()
    return n / elapsed


def worker_rate(s: Settings, n: int) -> float:
    from workers.worker import CaptionWorker

    w = CaptionWorker(s)
    first: list[float] = []
    bar = tqdm(total=n, desc="worker", unit="rec", file=sys.stderr)

    def on_batch(stats: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        bar.update(stats.handled - bar.n)

    stats = w.run(max_records=n, idle_exit_s=60, on_batch=on_batch, install_signals=False)
    elapsed = time.perf_counter() - first[0]
    bar.close()
    assert stats.features == n, f"worker produced {stats.features} features for {n} uploads"
    return n / elapsed


def bench_worker(n: int) -> dict[str, Any]:
    with Stack([BENCH_MODELS]) as s:
        s = s.updated({"triton_model": "null_captioner", "batch_size": 64, "budget_rate_per_s": 1e9, "budget_burst": 10**9,
                                 "dedupe_path": Path(tempfile.mkdtemp(prefix="mmfeat-dedupe-")) / "db"})  # fmt: skip
        ensure_topics(s, upload_topics(s, 4))
        with tqdm(total=n, desc="produce", unit="rec", file=sys.stderr) as bar:
            send_uploads(s, synthetic_uploads(n, seed=1), progress=lambda k: bar.update(k - bar.n))
        raw = raw_consume_rate(s, s.topics.uploads_topic, n)
        relay = relay_rate(s, s.topics.uploads_topic, s.topics.deferred_topic, n)
        worker = worker_rate(s, n)
    return {
        "records": n, "raw_consume_per_s": round(raw, 1), "relay_per_s": round(relay, 1), "worker_per_s": round(worker, 1),
        "ratio": round(worker / raw, 4), "ratio_vs_relay": round(worker / relay, 3), "goal_ratio": 0.5,
        "notes": "null_captioner answers without a model; synthetic ~1 kB PNG uploads inline; 4 partitions; batch_size 64; "
                 "relay = consume, produce with acks=all, commit per 64 records (the floor of any at-least-once stage)",
    }  # fmt: skip


# ---- backfill vs the live worker ---------------------------------------------------------------


def backfill_rate(s: Settings, since_ms: int, until_ms: int, topic: str, n: int, rate: float) -> tuple[float, int]:
    """Records/s of a backfill of [since, until) into ``topic`` at most ``rate``/s, from its first batch; and its batch size."""
    from workers.backfill import Backfill, PartitionProgress, Request

    ensure_topics(s, [TopicSpec(topic, 4, compacted=True)])
    job = Backfill(
        s,
        Request("uploads", s.topics.uploads_topic, topic, s.triton.triton_model, since_ms, until_ms),
        group_id=f"bench-{topic}",
        rate=rate,
    )
    first: list[float] = []
    bar = tqdm(total=n, desc=f"backfill <= {rate:g}/s", unit="rec", file=sys.stderr)

    def progress(parts: list[PartitionProgress]) -> None:
        done = sum(p.done for p in parts)
        if done and not first:
            first.append(time.perf_counter())
        bar.update(done - bar.n)

    summary = job.run(progress=progress, install_signals=False)
    elapsed = time.perf_counter() - first[0]
    bar.close()
    assert summary.finished and sum(p.features for p in summary.partitions) == n, summary.to_json()
    return n / elapsed, job.batch_size


def bench_backfill(n: int) -> dict[str, Any]:
    with Stack([BENCH_MODELS]) as s:
        s = s.updated({"triton_model": "null_captioner", "batch_size": 64, "budget_rate_per_s": 1e9, "budget_burst": 10**9,
                                 "dedupe_path": Path(tempfile.mkdtemp(prefix="mmfeat-dedupe-")) / "db", "backfill_metrics_port": 0,
                                 "worker_metrics_port": 0})  # fmt: skip
        ensure_topics(s, upload_topics(s, 4))
        since_ms = int(time.time() * 1000)
        with tqdm(total=n, desc="produce", unit="rec", file=sys.stderr) as bar:
            send_uploads(s, synthetic_uploads(n, seed=1), progress=lambda k: bar.update(k - bar.n))
        time.sleep(0.01)
        until_ms = int(time.time() * 1000)
        live = worker_rate(s, n)
        unpaced, _ = backfill_rate(s, since_ms, until_ms, s.topics.features_topic + ".unpaced", n, 1e9)
        limit = round(live / 4, -1)
        paced, batch = backfill_rate(s, since_ms, until_ms, s.topics.features_topic + ".paced", n, limit)
    return {
        "records": n, "worker_per_s": round(live, 1), "backfill_unpaced_per_s": round(unpaced, 1),
        "ratio_backfill_vs_worker": round(unpaced / live, 3), "rate_limit_per_s": limit, "backfill_paced_per_s": round(paced, 1),
        "ratio_paced_vs_limit": round(paced / limit, 3), "paced_batch": batch,
        "notes": "null_captioner; synthetic ~1 kB PNG uploads inline; 4 partitions; batch_size 64; rates from the first delivered "
                 "batch to the last; the backfill replays the same uploads through the same worker code into another topic",
    }  # fmt: skip


# ---- captioner: dynamic batching vs one request at a time --------------------------------------


def load_test(url: str, model: str, images: list[bytes], concurrency: int, duration_s: float) -> dict[str, float]:
    """``concurrency`` closed-loop clients, each sending one image per request, for ``duration_s``."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s
    errors = [0]

    def client(k: int) -> None:
        c = grpcclient.InferenceServerClient(url)
        i = k
        while time.perf_counter() < stop_at:
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[images[i % len(images)]]], dtype=np.object_))
            t0 = time.perf_counter()
            try:
                c.infer(model, [inp], client_timeout=120)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
            i += concurrency
        c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert latencies and errors[0] == 0, f"{model}: {errors[0]} failed requests"
    return {
        "requests": len(latencies), "captions_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1),
    }  # fmt: skip


def bench_captioner(model_dir: Path, concurrency: int, duration_s: float, instance_kind: str = "KIND_CPU") -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-bench-models-"))
    repo = tmp / "repo"
    services.render_model_repository(repo, model_dir, name="captioner_batched")
    block = (PROJECT_ROOT / "triton_models/captioner/config.pbtxt").read_text()
    dyn = block[block.index("dynamic_batching {") : block.index("}", block.index("dynamic_batching {")) + 1]
    services.render_model_repository(
        repo, model_dir, name="captioner_single", replace={dyn: "# no dynamic batching: one request per execute"}
    )
    paths = list_images(OPENCLIPART, 64, seed=3) if OPENCLIPART.is_dir() else []
    images = [p.read_bytes() for p in paths if p.stat().st_size < 200_000] or [b""]
    with Stack([repo], kafka=False) as s:
        assert s.triton.triton_url
        load_test(s.triton.triton_url, "captioner_batched", images, concurrency, 3)  # warm-up
        load_test(s.triton.triton_url, "captioner_single", images, concurrency, 3)
        single = load_test(s.triton.triton_url, "captioner_single", images, concurrency, duration_s)
        batched = load_test(s.triton.triton_url, "captioner_batched", images, concurrency, duration_s)
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = read_manifest(model_dir)
    return {
        "model": manifest.version, "model_trained": manifest.trained, "concurrency": concurrency, "duration_s": duration_s,
        "batch_1": single, "dynamic_batching": batched,
        "throughput_ratio": round(batched["captions_per_s"] / single["captions_per_s"], 2),
        "p99_ratio": round(batched["p99_ms"] / single["p99_ms"], 2),
        "goal": "throughput_ratio >= 3 with p99_ratio <= 2",
    }  # fmt: skip


def run_profiles_bench(quick: bool) -> dict[str, Any]:
    from bench.profiles import bench_profiles

    with Stack([], triton=False) as s:
        return bench_profiles(s, 20_000 if quick else 200_000, 10 if quick else 60, 2000 if quick else 40_000)


def run_media_bench(quick: bool) -> dict[str, Any]:
    from bench.media import bench_media

    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-bench-models-"))
    services.render_model_repository(tmp / "repo", DEFAULT_CAPTIONER, name="captioner_default")
    for reader in ("ocr", "asr"):
        services.render_reader_model(tmp / "repo", reader)
    try:
        with Stack([tmp / "repo"]) as s:
            return bench_media(s, 8 if quick else 40)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_ranker_bench(quick: bool, out_dir: Path) -> dict[str, Any]:
    from bench.ranker import bench_ranker  # torch and the captioner: loaded only for this one

    return bench_ranker(quick, out_dir)


def run_soak(minutes: float, out_dir: Path) -> dict[str, Any]:
    from bench.soak import bench_soak, plot

    doc = bench_soak(minutes)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(doc, out_dir / "bench_soak.png")
    g = doc["goals"]
    print(
        f"soak: worst RSS growth {100 * doc['worst_rss_growth']:.1f}% (goal < 10%), lag bounded {g['lag_bounded']}, "
        f"zero loss {g['zero_loss']} ({doc['loss']['uploads']} uploads, {doc['loss']['engagements_applied']} engagements applied)",
        file=sys.stderr,
    )
    return doc


def main(which: str, *, out_dir: Path, quick: bool = False, minutes: float = 30.0) -> Path:
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "soak": lambda: run_soak(minutes, out_dir),
        "worker": lambda: bench_worker(2000 if quick else 20000),
        "captioner": lambda: bench_captioner(DEFAULT_CAPTIONER, 16, 5 if quick else 30),
        "profiles": lambda: run_profiles_bench(quick),
        "backfill": lambda: bench_backfill(2000 if quick else 10000),
        "ranker": lambda: run_ranker_bench(quick, out_dir),
        "media": lambda: run_media_bench(quick),
    }
    if which not in runners:
        raise SystemExit(f"unknown benchmark {which!r}: choose {', '.join(runners)}")
    return write_result(out_dir, which, runners[which]())


if __name__ == "__main__":
    print(main(sys.argv[1], out_dir=Path(sys.argv[2]) if len(sys.argv) > 2 else PROJECT_ROOT / "results"))
