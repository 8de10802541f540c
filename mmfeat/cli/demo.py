"""`make demo`: fresh embedded services, a few hundred real images uploaded, every one captioned
(or deferred or dead-lettered), features printed per item, a summary; then engagements of simulated
users through the profiles app and a few of their profiles; then a folder of videos, spoken clips,
images with text and a text post, each source's text printed; nothing left running."""

from __future__ import annotations

import gc
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import tqdm

from captioner.world.clipart import OPENCLIPART, load_vocabulary
from mmfeat.cli import services
from mmfeat.cli.demo_media import demo_media
from mmfeat.cli.produce import engagement_records, image_uploads, interest_engagements, list_images, send_records, send_uploads
from mmfeat.cli.render import caption_grid, profile_table, short_ids
from mmfeat.features import caption_of
from mmfeat.kafka.client import OutRecord, ensure_topics
from mmfeat.kafka.reader import TopicRecord, read_topic
from mmfeat.schemas import H_FEATURED_AT, Upload, parse_feature_record
from mmfeat.settings import Settings
from mmfeat.tokenizers import TOKENIZERS, ranked
from mmfeat.topics import create_topics
from mmfeat.untrusted import clean
from workers.core import Stats
from workers.worker import BackgroundWorker, CaptionWorker

console = Console(width=None if sys.stdout.isatty() else 160)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def paced_uploads(uploads: Iterator[Upload], rate: float) -> Iterator[Upload]:
    start = time.monotonic()
    for i, up in enumerate(uploads):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield up


def wait_for_assignment(worker: CaptionWorker, timeout_s: float = 60) -> None:
    if not worker.assigned.wait(timeout_s):
        raise services.ServiceError(f"the worker got no partitions within {timeout_s:.0f}s")


def demo_images(images: Path | None, count: int, seed: int) -> list[Path]:
    """``count`` images from ``images``, or by default from the drawings of the captioner's object vocabulary."""
    if images is not None:
        return list_images(images, count, seed)
    drawings = sorted(OPENCLIPART / d for ds in load_vocabulary().values() for d in ds)
    return sorted(random.Random(seed).sample(drawings, min(count, len(drawings))))


def demo_profiles(s: Settings, captions: dict[str, str], *, users: int, engagements: int, seed: int) -> None:
    """Engagements of users with known interests -> the profiles app -> a few profiles, decoded."""
    from mmfeat.topics import app_topics
    from streams.client import fetch_profile, profiles_app
    from streams.offline import recompute_profiles
    from streams.rules import profile_config

    console.rule("user interest profiles")
    s = s.updated({"profiles_web_port": services.free_port()})
    ensure_topics(s, app_topics(s))
    start = datetime.now(UTC) - timedelta(days=2)
    evs, interests = interest_engagements(captions, users, engagements, seed=seed, start=start)
    bad = [b"{not json", b'{"user_id": "user-000", "item_id": "demo-000001", "event": "poke", "ts": "2026-01-01T00:00:00Z"}']
    with tqdm(total=len(evs), desc="engagements", unit="ev", file=sys.stderr) as bar:
        send_records(s, engagement_records(s, evs), progress=lambda k: bar.update(k - bar.n), chunk=200)
    send_records(s, [OutRecord(s.topics.engagements_topic, "user-000", raw) for raw in bad])
    log = s.services.state_dir / "profiles.log"
    with profiles_app(s, log) as proc:
        with tqdm(total=len(evs), desc="engagements applied", unit="ev", file=sys.stderr) as bar:
            deadline = time.monotonic() + 300
            # a profile is published at most every MMFEAT_PROFILE_EMIT_INTERVAL_S, so records are fewer than
            # engagements: count what the latest profile of each user says it has applied
            while (done := applied(s)) < len(evs) and proc.poll() is None and time.monotonic() < deadline:
                bar.update(done - bar.n)
                time.sleep(1.0)
            bar.update(done - bar.n)
        if done < len(evs):
            raise services.ServiceError(f"the profiles app applied {done} of {len(evs)} engagements; see {log}")
        truth = recompute_profiles(s, profile_config(s))
        url = f"http://{s.profiles.profiles_web_host}:{s.profiles.profiles_web_port}"
        served = {u: fetch_profile(url, u) for u in sorted(truth)}
        for user in sorted(truth)[:3]:
            console.print(f"{user} was simulated to like [bold]{' and '.join(interests[user])}[/bold]")
            console.print(profile_table(served[user], s, words=8))
        same = all(served[u].engagements == p.applied for u, p in truth.items())
        dlq = list(read_topic(s, s.topics.engagements_dlq_topic, timeout_s=5))
        console.print(
            f"profiles: {len(served)} users from {len(evs)} engagements; engagement counts equal a recomputation "
            f"from the log: {'yes' if same else '[red]NO[/red]'}; DLQ {len(dlq)} {dict(Counter(r.json_value()['reason'] for r in dlq))}"
        )
        console.print(f"lookup while it ran: {url}/profiles/<user_id>; app log {log}")


def applied(s: Settings) -> int:
    """Engagements the published profiles have applied: the sum over users of their latest profile's count."""
    latest: dict[str, int] = {}
    for rec in read_topic(s, s.topics.profiles_topic, timeout_s=1):
        value = rec.json_value()
        if rec.key and isinstance(value, dict) and isinstance(value.get("engagements"), int):
            latest[rec.key] = value["engagements"]
    return sum(latest.values())


def run_demo(
    base: Settings, *, images: Path | None, count: int, seed: int, rate: float = 30.0, profile_users: int = 40, engagements: int = 3000
) -> Path:
    """Run the demo; return the path of the caption grid PNG it wrote."""
    if images is not None and not images.is_dir():
        raise services.ServiceError(f"{images} is not a folder of images")
    if images is None and not OPENCLIPART.is_dir():
        raise services.ServiceError(f"{OPENCLIPART} not found: install Debian's openclipart-png (make sysdeps) or pass --images DIR")
    state = base.services.state_dir / "demo"
    shutil.rmtree(state, ignore_errors=True)  # each demo is a fresh world: new broker storage, new dedupe store
    quiet = {"kafka_log_level": 3}  # start-up and shutdown chatter would bury the demo's output
    root = (images or OPENCLIPART).resolve()
    s = services.with_free_ports(base).updated({"state_dir": state, "allowed_roots": [root], **quiet})
    services.up(s, log=console.print)
    try:
        s = services.resolve(s)
        create_topics(s)
        paths = demo_images(images, count, seed)
        pairs = list(image_uploads(paths, inline=False, prefix="demo"))
        names = {src.item_id: src.name for _, src in pairs}
        stats, captioner_version = caption_uploads(s, [u for u, _ in pairs], rate)
        features = {r.key: r for r in read_topic(s, s.topics.features_topic, timeout_s=5)}
        dlq = list(read_topic(s, s.topics.dlq_topic, timeout_s=5))
        deferred = list(read_topic(s, s.topics.deferred_topic, timeout_s=5))
        latencies = print_features(s, features, names)
        print_summary(len(pairs), features, deferred, dlq, names, latencies)
        console.print(f"worker: dedupe hits {stats.dedupe_hits}; captioner {captioner_version}")
        path_of = {u.item_id: p for (u, _), p in zip(pairs, paths, strict=True)}
        shown = sorted(k for k in features if k)[:16]
        captions = {k: caption_of(parse_feature_record(rec.value or b""))[0] for k, rec in features.items() if k}
        grid = caption_grid([(path_of[k], captions[k]) for k in shown], base.services.state_dir / "demo-captions.png")
        console.print(f"caption grid: {grid}")
        demo_profiles(s, captions, users=profile_users, engagements=engagements, seed=seed)
        demo_media(s, state / "media", seed=seed)
    finally:
        services.down(s, log=console.print)
    return grid


def caption_uploads(s: Settings, uploads: list[Upload], rate: float) -> tuple[Stats, str | None]:
    """Send the uploads at a steady rate into a running worker, until each has its outcome.

    The worker runs first, as for live traffic, so the latency is upload-to-feature, not time spent waiting
    behind a pre-loaded backlog."""
    background = BackgroundWorker(s, max_records=len(uploads), idle_exit_s=120)
    wait_for_assignment(background.worker)
    with tqdm(total=len(uploads), desc="upload+caption", unit="img", file=sys.stderr) as bar:
        send_uploads(s, paced_uploads(iter(uploads), rate), progress=lambda k: bar.set_postfix(sent=k), chunk=10)
        while background.alive():
            bar.update(background.worker.stats.handled - bar.n)
            time.sleep(0.2)
        stats = background.join(60)
        bar.update(stats.handled - bar.n)
    version = background.worker.captioner_version
    del background  # its Kafka clients go now, not after the broker stops (they would log connection errors);
    gc.collect()  # the producer sits in a reference cycle with its delivery callbacks
    return stats, version


def print_features(s: Settings, features: dict[str | None, TopicRecord], names: dict[str, str]) -> list[float]:
    """One row per feature record (caption and the ranker's token lists); return upload-to-feature latencies."""
    lists = ranked()
    table = Table(title=f"{len(features)} feature records on {s.topics.features_topic}", show_lines=False)
    for col in ("item", "image", "caption", *(f"{t} ({TOKENIZERS[t].label})" for t in lists)):
        table.add_column(col, overflow="fold")
    latencies = []
    for item_id, rec in sorted(features.items(), key=lambda kv: kv[0] or ""):
        record = parse_feature_record(rec.value or b"")
        caption, ids = caption_of(record)
        table.add_row(item_id, names.get(item_id or "", "?"), clean(caption), *(short_ids(ids.get(t, []), 8) for t in lists))
        featured_at = datetime.fromisoformat(rec.headers[H_FEATURED_AT])
        latencies.append((featured_at - record.upload_created_at).total_seconds())
    console.print(table)
    return latencies


def print_summary(
    sent: int, features: dict[str | None, TopicRecord], deferred: list[TopicRecord], dlq: list[TopicRecord], names: dict[str, str],
    latencies: list[float],
) -> None:  # fmt: skip
    """The first DLQ records, the outcome counts and the upload-to-feature latency."""
    reasons = Counter(r.json_value()["reason"] for r in dlq)
    for r in dlq[:10]:
        v = r.json_value()
        what = f"{v['item_id']} {names.get(v['item_id'], '?')}: {v['reason']}: {v['error_message'][:120]}"
        console.print(f"[red]DLQ[/red] {escape(clean(what))}")
    console.rule("summary")
    console.print(f"uploads sent: {sent}   features: {len(features)}   deferred: {len(deferred)}   DLQ: {len(dlq)} {dict(reasons)}")
    if latencies:
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        console.print(f"upload-to-feature latency: p50 {p50:.2f}s  p95 {p95:.2f}s  (n={len(latencies)})")
    lost = sent - len(features) - len(deferred) - len(dlq)
    console.print("nothing lost: every upload has exactly one outcome" if lost == 0 else f"[red]{lost} upload(s) without an outcome[/red]")
