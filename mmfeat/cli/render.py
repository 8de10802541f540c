"""Human-readable rendering of mmfeat records for `mmfeat tail` and the demo."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont
from rich.table import Table
from rich.text import Text

from mmfeat.kafka.reader import TopicRecord
from mmfeat.media.image import decode_rgb
from mmfeat.schemas import H_CAPTIONER, H_SCHEMA, H_TOKENIZERS, UserProfileV1
from mmfeat.settings import Settings
from mmfeat.tokenizers import load_tokenizers
from mmfeat.untrusted import clean

if TYPE_CHECKING:
    from mmfeat.cli.services import NodeStatus, PartitionStatus
    from workers.backfill import Summary


def short_ids(ids: list[int], n: int = 12) -> str:
    head = " ".join(map(str, ids[:n]))
    return f"[{head}{' ...' if len(ids) > n else ''}] ({len(ids)})"


def render_record(rec: TopicRecord) -> Text:
    """One record as a few lines: where, key, and the fields that matter for its kind.

    Everything a record carries is escaped (``clean``): a key or an error text may hold terminal escape
    sequences or newlines, and pretty output goes to a terminal."""
    value = rec.json_value()
    t = Text()
    t.append(f"{clean(rec.topic)}[{rec.partition}]@{rec.offset} ", style="dim")
    t.append(f"key={clean(rec.key, 200)}\n", style="bold")
    sources = value.get("sources") if isinstance(value, dict) else None
    if isinstance(value, dict) and (isinstance(value.get("token_ids"), dict) or isinstance(sources, dict)):
        if not isinstance(sources, dict):  # version 1: the caption is the only source
            sources = {"caption": {"text": value.get("caption"), "token_ids": value.get("token_ids")}}
        else:
            t.append(f"  {clean(value.get('media_type'), 20)}\n", style="dim")
        for source, src in sources.items():
            src = src if isinstance(src, dict) else {"text": src}
            t.append(f"  {clean(source, 20)}: {clean(repr(src.get('text')), 400)}\n", style="green")
            ids_of = src.get("token_ids")
            for name, ids in sorted(ids_of.items()) if isinstance(ids_of, dict) else []:
                t.append(f"    {clean(name, 20):<8} {short_ids(ids) if isinstance(ids, list) else clean(ids, 80)}\n")
        frames = value.get("frames")
        for f in frames[:8] if isinstance(frames, list) else []:
            f = f if isinstance(f, dict) else {}
            t.append(f"  frame {clean(f.get('t_s'), 12)} s: {clean(repr(f.get('caption')), 200)}\n")
        emb = value.get("embedding")
        if isinstance(emb, dict):
            t.append(f"  embedding: {clean(emb.get('dtype'), 16)} x {clean(emb.get('dim'), 16)}\n")
        t.append(f"  lineage: captioner={clean(rec.headers.get(H_CAPTIONER))} schema={clean(rec.headers.get(H_SCHEMA))}\n", style="dim")
        t.append(f"           tokenizers={clean(rec.headers.get(H_TOKENIZERS))}\n", style="dim")
    elif isinstance(value, dict) and "error_message" in value:
        t.append(
            f"  {clean(value.get('reason'), 64)} ({clean(value.get('error_class'), 64)}): {clean(value.get('error_message'), 600)}\n",
            style="red",
        )
        where = f"{value.get('source_topic')}[{value.get('source_partition')}]@{value.get('source_offset')}"
        t.append(f"  from {clean(where)}\n", style="dim")
    elif isinstance(value, dict) and "events" in value and "user_id" in value:
        try:
            prof = UserProfileV1.model_validate_json(rec.value or b"")
        except ValueError:
            t.append(f"  {clean(value, 400)}\n")
        else:
            counts = ", ".join(f"{clean(ev, 64)} {p.count}" for ev, p in sorted(prof.events.items()))
            t.append(f"  profile: {prof.engagements} engagements ({counts}), as of {prof.as_of}\n", style="green")
            t.append(f"  lineage: {clean(profile_lineage(prof), 400)}\n", style="dim")
    elif isinstance(value, dict) and "upload_json" in value:
        what = f"deferred ({value.get('reason')}) from {value.get('source')} at {value.get('deferred_at')}"
        t.append(f"  {clean(what, 400)}\n", style="yellow")
    elif isinstance(value, dict):
        shown = {k: (v[:40] + "..." if isinstance(v, str) and len(v) > 60 else v) for k, v in value.items()}
        t.append(f"  {clean(shown, 400)}\n")
    else:
        t.append(f"  {clean(repr(value), 400)}\n")
    return t


def caption_grid(items: Sequence[tuple[Path | bytes, str]], out: Path, cols: int = 4, tile: int = 200) -> Path:
    """A PNG grid of images (files, or image bytes) with their captions underneath, for a person to look at."""
    rows = max(1, -(-len(items) // cols))
    text_h = 56
    sheet = Image.new("RGB", (cols * tile, rows * (tile + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (path, caption) in enumerate(items):
        x, y = (i % cols) * tile, (i // cols) * (tile + text_h)
        img = decode_rgb(path if isinstance(path, bytes) else path.read_bytes(), 10**9, max_side=tile - 10)
        sheet.paste(img, (x + (tile - img.width) // 2, y + (tile - img.height) // 2))
        lines = textwrap.wrap(caption or "(empty)", 28)[:3]
        draw.multiline_text((x + 6, y + tile + 2), "\n".join(lines), fill="black", font=font, spacing=2)
        draw.rectangle((x, y, x + tile - 1, y + tile + text_h - 1), outline=(210, 210, 210))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def quality_table(results: dict[str, object]) -> Table:
    """`mmfeat eval-captioner` results: one row per (held-out set, system)."""
    table = Table(title=f"caption quality of {results['model']}")
    metrics = ("object_recall", "object_precision", "count_accuracy", "relation_accuracy", "bleu4")
    for col in ("held-out set", "system", "recall", "precision", "count", "relation", "BLEU-4"):
        table.add_column(col, no_wrap=True)
    sets = results["sets"]
    assert isinstance(sets, dict)
    for set_name, systems in sets.items():
        for system, m in systems.items():
            table.add_row(set_name, system, *(f"{m[k]:.3f}" for k in metrics), style="bold" if system == "trained" else None)
    return table


def profile_table(rec: UserProfileV1, settings: Settings, words: int = 12) -> Table:
    """A profile as a table: per event type, the heaviest tokens decoded back to words, with weights."""
    tok = load_tokenizers([rec.tokenizer], settings.features.tokenizer_dir, settings.features.hash_buckets)[rec.tokenizer]
    table = Table(title=clean(f"profile of {rec.user_id}: {rec.engagements} engagements, as of {rec.as_of} ({rec.tokenizer} tokens)"))
    for col in ("event", "count", "top tokens (weight)"):
        table.add_column(col)
    for ev, p in sorted(rec.events.items()):
        decoded = tok.decode(p.token_ids[:words])
        cells = ", ".join(f"{w} ({x:.2f})" for w, x in zip(decoded, p.weights, strict=False))
        table.add_row(ev, str(p.count), cells)
    table.caption = f"lineage: {profile_lineage(rec)}"
    return table


def profile_lineage(rec: UserProfileV1) -> str:
    """Which features (topic, captioner and tokenizer versions) and schema a profile was built from."""
    versions = ", ".join(f"{k} ({n})" for k, n in sorted(rec.feature_lineage.items(), key=lambda kv: -kv[1])) or "unknown"
    return f"{rec.features_topic}: {versions}; schema v{rec.schema_version}"


def backfill_table(summary: Summary) -> Table:
    """Per partition: the planned span, where this run began, and what it produced."""
    t = Table(title=f"backfill {summary.request.source_topic} -> {summary.request.features_topic} (group {summary.group_id})")
    for col in ("partition", "span", "resumed at", "features", "dlq", "outside range", "status"):
        t.add_column(col, justify="left" if col in ("span", "status") else "right")
    for p in summary.partitions:
        status = "done" if p.finished else f"{p.done}/{p.total}"
        t.add_row(str(p.partition), f"{p.start}..{p.end}", str(p.resumed_at), str(p.features), str(p.dlq), str(p.outside), status)
    return t


def services_table(
    nodes: Sequence[NodeStatus], named_kafka: str | None, triton: str | None, triton_pid: int | None, triton_ready: bool
) -> Table:
    """`mmfeat status`: each embedded service, where it listens and whether it runs."""
    t = Table(title="services")
    for col in ("service", "address", "pid", "state"):
        t.add_column(col)
    if named_kafka:
        t.add_row("kafka", clean(named_kafka), "-", "named by MMFEAT_BOOTSTRAP_SERVERS")
    for n in nodes:
        state = "running" if n.running and n.listening else "starting" if n.running else "stopped"
        t.add_row(f"kafka node {n.node_id}", n.bootstrap, str(n.pid or "-"), state)
    if triton:
        state = "ready" if triton_ready else "named by MMFEAT_TRITON_URL" if triton_pid is None else "not ready"
        t.add_row("triton", clean(triton), str(triton_pid or "-"), state)
    else:
        t.add_row("triton", "-", "-", "stopped")
    return t


def partitions_table(parts: Sequence[PartitionStatus]) -> Table:
    """Every partition's leader, replicas and in-sync replicas; the under-replicated marked."""
    t = Table(title="partitions")
    for col in ("topic", "partition", "leader", "replicas", "in sync", ""):
        t.add_column(col, justify="right" if col in ("partition", "leader") else "left")
    for p in parts:
        mark = "no leader" if p.leader < 0 else "under-replicated" if p.under_replicated else ""
        t.add_row(clean(p.topic), str(p.partition), str(p.leader), ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)), mark)
    return t
