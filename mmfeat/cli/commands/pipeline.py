"""The upload path: the caption worker, backfill, producing uploads, reading topics."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mmfeat.cli.app import app, console, out, settings
from mmfeat.errors import MmfeatError
from mmfeat.untrusted import clean


@app.command()
def worker(
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many seconds without records")] = None,
    max_records: Annotated[int | None, typer.Option(help="Exit after handling this many records")] = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group (MMFEAT_GROUP_ID)")] = None,
) -> None:
    """Run the caption worker on media.uploads until stopped."""
    from workers.worker import CaptionWorker

    s = settings(group_id=group_id)
    w = CaptionWorker(s)
    console.print(
        f"worker: {s.topics.uploads_topic} -> {s.topics.features_topic} via Triton {s.triton.triton_url} (group {s.worker.group_id})"
    )
    stats = w.run(idle_exit_s=idle_exit, max_records=max_records)
    console.print(f"worker: stopped; features={stats.features} deferred={stats.deferred} dlq={stats.dlq} dedupe_hits={stats.dedupe_hits}")


@app.command()
def backfill(
    since: Annotated[str, typer.Option(help="Replay records from this time on: ISO-8601 (UTC if no offset), now, or 30m / 2h / 7d ago")],
    features_topic: Annotated[str, typer.Option(help="The feature topic version to write, e.g. media.item-features.v2")],
    until: Annotated[str, typer.Option(help="...up to (not including) this time")] = "now",
    captioner: Annotated[
        str | None, typer.Option(help="A captioner model directory (loaded into Triton beside the live one) or a model Triton serves")
    ] = None,
    tokenizers: Annotated[str | None, typer.Option(help="Comma-separated token lists (default: MMFEAT_TOKENIZERS)")] = None,
    source: Annotated[str, typer.Option(help="uploads (media.uploads) or deferred (media.uploads.deferred)")] = "uploads",
    rate: Annotated[float | None, typer.Option(help="Records per second at most (default: a tenth of the live captioner budget)")] = None,
    group_id: Annotated[
        str | None, typer.Option("--group", help="Consumer group (default mmfeat-backfill.<source>.<features topic>)")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Discard this group's unfinished plan and start over")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout")] = False,
) -> None:
    """Replay uploads of a time range through the worker's code path into a new feature topic version; resumable."""
    from datetime import UTC, datetime

    from tqdm import tqdm

    from mmfeat.cli.render import backfill_table
    from workers.backfill import PartitionProgress, start_backfill

    base = settings(tokenizers=[t for t in tokenizers.split(",") if t] if tokenizers else None)
    job = start_backfill(
        base, since=since, until=until, features_topic=features_topic, captioner=captioner, source=source, rate=rate,
        group_id=group_id, restart=restart,
    )  # fmt: skip
    req, parts = job.request, job.summary.partitions
    t0, t1 = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (req.since_ms, req.until_ms))
    console.print(
        f"backfill: {req.source_topic} [{t0.isoformat()} .. {t1.isoformat()}) -> {features_topic} via Triton model {req.model}, "
        f"at most {job.pacer.rate:g} records/s, group {job.group_id}"
    )
    bars = {
        p.partition: tqdm(total=p.total, initial=p.done, desc=f"{req.source_topic}[{p.partition}]", unit="rec", position=i, file=sys.stderr)
        for i, p in enumerate(parts)
    }

    def progress(ps: list[PartitionProgress]) -> None:
        for p in ps:
            bars[p.partition].update(p.done - bars[p.partition].n)

    try:
        summary = job.run(progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    out.print(backfill_table(summary))
    if as_json:
        print(json.dumps(summary.to_json(), sort_keys=True))
    state = "finished" if summary.finished else "stopped before the end: rerun the same command to continue"
    console.print(f"backfill: {summary.records_this_run} record(s) in {summary.seconds:.1f}s; {state}")


@app.command()
def produce(
    images: Annotated[Path | None, typer.Option(help="A folder of images to upload (recursively)")] = None,
    media: Annotated[Path | None, typer.Option(help="A folder of media: one upload per file, its kind from its content")] = None,
    count: Annotated[int, typer.Option(help="How many uploads (synthetic, or at most this many files)")] = 100,
    inline: Annotated[bool, typer.Option("--inline/--by-reference", help="Send media bytes, or file:// URIs")] = True,
    seed: int = 0,
    topic: Annotated[str | None, typer.Option(help="Target topic (default media.uploads)")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --media: one JSON object per upload sent (item_id, file, media_type)")
    ] = False,
) -> None:
    """Send uploads: synthetic images, real ones from --images DIR, or any media from --media DIR."""
    from tqdm import tqdm

    from mmfeat.cli.produce import image_uploads, list_images, media_uploads, send_uploads, synthetic_uploads
    from mmfeat.schemas import Upload

    s = settings()
    uploads: Iterator[Upload]
    skipped: list[tuple[Path, str]] = []
    sent_files: list[tuple[str, str, str]] = []
    if media is not None:
        pairs = list(media_uploads(media, inline=inline, limit=count, skipped=skipped))
        if not pairs:
            raise MmfeatError(f"no image, video or text file under {media}")
        sent_files = [(u.item_id, src.name, u.media_type) for u, src in pairs]
        uploads, n = (u for u, _ in pairs), len(pairs)
    elif images is not None:
        paths = list_images(images, count, seed)
        if not paths:
            raise MmfeatError(f"no images under {images}")
        uploads = (u for u, _ in image_uploads(paths, inline=inline))
        n = len(paths)
    else:
        uploads, n = synthetic_uploads(count, seed), count
    with tqdm(total=n, desc="produce", unit="upload", file=sys.stderr, disable=as_json) as bar:
        sent = send_uploads(s, uploads, topic, progress=lambda k: bar.update(k - bar.n))
    for path, why in skipped:
        console.print(f"produce: skipped {clean(path)}: {why}")
    if as_json:
        for item_id, name, kind in sent_files[:sent]:
            print(json.dumps({"item_id": item_id, "file": name, "media_type": kind}), flush=True)
    console.print(f"produce: {sent} upload(s) acknowledged on {topic or s.topics.uploads_topic}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read from the beginning")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record: key, value, headers")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="Stop after N records")] = None,
    timeout: Annotated[float, typer.Option(help="Stop after S seconds without a new record")] = 5.0,
    follow: Annotated[bool, typer.Option(help="Keep reading past the current end")] = False,
) -> None:
    """Decode and print a topic's records (like kcat -C / -J)."""
    from mmfeat.cli.render import render_record
    from mmfeat.kafka.reader import read_topic

    n = 0
    for rec in read_topic(settings(), topic, max_records=max_records, timeout_s=timeout, follow=follow):
        n += 1
        if as_json:
            print(json.dumps(rec.as_json(), sort_keys=True), flush=True)
        else:
            out.print(render_record(rec))
    if not as_json:
        console.print(f"tail: {n} record(s) from {topic}")


@app.command("schemas")
def schemas(
    write: Annotated[Path | None, typer.Option("--write", help="write one JSON Schema file per record kind into this folder")] = None,
) -> None:
    """Every topic's record schema as JSON Schema (the committed copies are docs/schemas/)."""
    from mmfeat.schemas.published import PUBLISHED, render, write_all

    if write is None:
        out.print_json(json.dumps({stem: json.loads(render(stem)) for stem in PUBLISHED}))
        return
    for path in write_all(write):
        console.print(f"wrote {path}")
