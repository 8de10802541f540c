"""`make demo`: fresh embedded services, a few hundred real images uploaded, every one captioned
(or deferred or dead-lettered), features printed per item, a summary, and nothing left running."""

from __future__ import annotations

import shutil
import statistics
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from mmfeat import services
from mmfeat.kafka.reader import read_topic
from mmfeat.produce import image_uploads, list_images, send_uploads
from mmfeat.render import short_ids
from mmfeat.schemas import H_FEATURED_AT
from mmfeat.settings import Settings
from mmfeat.topics import create_topics

console = Console()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def run_demo(base: Settings, *, images: Path, count: int, seed: int) -> None:
    from workers.worker import CaptionWorker

    if not images.is_dir():
        raise services.ServiceError(f"{images} not found: install Debian's openclipart-png or pass --images DIR")
    state = base.state_dir / "demo"
    shutil.rmtree(state, ignore_errors=True)  # each demo is a fresh world: new broker storage, new dedupe store
    s = services.with_free_ports(base).model_copy(update={"state_dir": state, "allowed_roots": [images.resolve()]})
    services.up(s, log=console.print)
    try:
        s = services.resolve(s)
        create_topics(s)
        paths = list_images(images, count, seed)
        pairs = list(image_uploads(paths, inline=False, prefix="demo"))
        names = {src.item_id: src.name for _, src in pairs}
        with tqdm(total=len(pairs), desc="upload", unit="img", file=sys.stderr) as bar:
            send_uploads(s, (u for u, _ in pairs), progress=lambda k: bar.update(k - bar.n))
        worker = CaptionWorker(s)
        with tqdm(total=len(pairs), desc="caption", unit="img", file=sys.stderr) as bar:
            stats = worker.run(max_records=len(pairs), idle_exit_s=60, on_batch=lambda st: bar.update(st.handled - bar.n))
        features = {r.key: r for r in read_topic(s, s.features_topic, timeout_s=5)}
        dlq = list(read_topic(s, s.dlq_topic, timeout_s=5))
        deferred = list(read_topic(s, s.deferred_topic, timeout_s=5))
        table = Table(title=f"{len(features)} feature records on {s.features_topic}", show_lines=False)
        for col in ("item", "image", "caption", "sp (A)", "word (B)"):
            table.add_column(col, overflow="fold")
        latencies = []
        for item_id, rec in sorted(features.items()):
            v = rec.json_value()
            table.add_row(item_id, names.get(item_id or "", "?"), v["caption"], short_ids(v["token_ids"]["sp"], 8), short_ids(v["token_ids"]["word"], 8))
            featured_at = datetime.fromisoformat(rec.headers[H_FEATURED_AT])
            latencies.append((featured_at - datetime.fromisoformat(v["upload_created_at"])).total_seconds())
        console.print(table)
        reasons = Counter(r.json_value()["reason"] for r in dlq)
        for r in dlq[:10]:
            v = r.json_value()
            console.print(f"[red]DLQ[/red] {v['item_id']} {names.get(v['item_id'], '?')}: {v['reason']}: {v['error_message'][:120]}")
        console.rule("summary")
        console.print(f"uploads sent: {len(pairs)}   features: {len(features)}   deferred: {len(deferred)}   DLQ: {len(dlq)} {dict(reasons)}")
        console.print(f"worker: dedupe hits {stats.dedupe_hits}; captioner {worker.captioner_version} (untrained default until the trained captioner lands)")
        if latencies:
            console.print(f"upload-to-feature latency: p50 {percentile(latencies, 50):.2f}s  p95 {percentile(latencies, 95):.2f}s  (n={len(latencies)})")
        lost = len(pairs) - len(features) - len(deferred) - len(dlq)
        console.print("nothing lost: every upload has exactly one outcome" if lost == 0 else f"[red]{lost} upload(s) without an outcome[/red]")
    finally:
        services.down(s.model_copy(update={"state_dir": state}), log=console.print)

