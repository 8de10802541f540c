"""`mmfeat`: bring services up and down, run the caption worker, produce and tail records.

Every command reads the one Settings object (MMFEAT_* env vars, then flags) and prints a one-line
error, never a traceback, for anything mmfeat raised on purpose.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.markup import escape

from mmfeat.errors import MmfeatError
from mmfeat.settings import Settings, load_settings
from mmfeat.untrusted import clean, install_log_escaping

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multimedia uploads to recommendation features, on Kafka and Triton.",
)
console = Console(stderr=True, soft_wrap=True)  # one message, one line: no wrapping at the terminal's width
out = Console(highlight=False)

_flags: dict[str, Any] = {}


@app.callback()
def _global(
    bootstrap_servers: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: the embedded broker)")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC host:port (default: the embedded server)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Where embedded services keep data, logs and pids")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    _flags.update(bootstrap_servers=bootstrap_servers, triton_url=triton_url, state_dir=state_dir)


def settings(**overrides: Any) -> Settings:
    from mmfeat.services import resolve

    return resolve(load_settings(**_flags, **overrides))


@app.command()
def up(kafka: bool = True, triton: bool = True) -> None:
    """Start the embedded Kafka broker and Triton server (idempotent) and create the topics."""
    from mmfeat import services
    from mmfeat.topics import create_topics

    s = load_settings(**_flags)
    services.up(s, kafka=kafka, triton=triton, log=console.print)
    if kafka:
        created = create_topics(services.resolve(s))
        console.print(f"topics: created {', '.join(created)}" if created else "topics: all present")


@app.command()
def down() -> None:
    """Stop exactly the services `mmfeat up` started."""
    from mmfeat import services

    services.down(load_settings(**_flags), log=console.print)


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
    console.print(f"worker: {s.uploads_topic} -> {s.features_topic} via Triton {s.triton_url} (group {s.group_id})")
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

    from mmfeat.kafka.client import TopicSpec, ensure_topics, make_admin
    from mmfeat.render import backfill_table
    from workers.backfill import Backfill, PartitionProgress, Request, is_relative, parse_time
    from workers.triton_client import serve_captioner

    if source not in ("uploads", "deferred"):
        raise MmfeatError(f"--source is uploads or deferred, not {source!r}")
    base = settings(tokenizers=[t for t in tokenizers.split(",") if t] if tokenizers else None)
    source_topic = base.uploads_topic if source == "uploads" else base.deferred_topic
    model = base.triton_model
    if captioner is not None:
        model = serve_captioner(base.triton_url or "", Path(captioner)) if Path(captioner).exists() else captioner
    t0, t1 = parse_time(since), parse_time(until)
    req = Request(source, source_topic, features_topic, model, int(t0.timestamp() * 1000), int(t1.timestamp() * 1000))  # type: ignore[arg-type]
    meta = make_admin(base).list_topics(source_topic, timeout=10).topics.get(source_topic)
    ensure_topics(base, [TopicSpec(features_topic, len(meta.partitions) if meta and meta.partitions else 4, compacted=True)])
    group = group_id or f"mmfeat-backfill.{source}.{features_topic}"
    exact = not (is_relative(since) or is_relative(until))
    job = Backfill(base, req, group_id=group, rate=rate or base.budget_rate_per_s / 10, restart=restart, exact_range=exact)
    parts = job.plan()
    t0, t1 = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (job.request.since_ms, job.request.until_ms))
    console.print(
        f"backfill: {source_topic} [{t0.isoformat()} .. {t1.isoformat()}) -> {features_topic} via Triton model {model}, "
        f"at most {job.pacer.rate:g} records/s, group {group}"
    )
    bars = {
        p.partition: tqdm(total=p.total, initial=p.done, desc=f"{source_topic}[{p.partition}]", unit="rec", position=i, file=sys.stderr)
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
    count: Annotated[int, typer.Option(help="How many uploads (synthetic, or at most this many images)")] = 100,
    inline: Annotated[bool, typer.Option("--inline/--by-reference", help="Send image bytes, or file:// URIs")] = True,
    seed: int = 0,
    topic: Annotated[str | None, typer.Option(help="Target topic (default media.uploads)")] = None,
) -> None:
    """Send uploads: synthetic images, or real ones from --images DIR."""
    from tqdm import tqdm

    from mmfeat.produce import image_uploads, list_images, send_uploads, synthetic_uploads
    from mmfeat.schemas import UploadV1

    s = settings()
    uploads: Iterator[UploadV1]
    if images is not None:
        paths = list_images(images, count, seed)
        if not paths:
            raise MmfeatError(f"no images under {images}")
        uploads = (u for u, _ in image_uploads(paths, inline=inline))
        n = len(paths)
    else:
        uploads, n = synthetic_uploads(count, seed), count
    with tqdm(total=n, desc="produce", unit="upload", file=sys.stderr) as bar:
        sent = send_uploads(s, uploads, topic, progress=lambda k: bar.update(k - bar.n))
    console.print(f"produce: {sent} upload(s) acknowledged on {topic or s.uploads_topic}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read from the beginning")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record: key, value, headers")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="Stop after N records")] = None,
    timeout: Annotated[float, typer.Option(help="Stop after S seconds without a new record")] = 5.0,
    follow: Annotated[bool, typer.Option(help="Keep reading past the current end")] = False,
) -> None:
    """Decode and print a topic's records (like kcat -C / -J)."""
    from mmfeat.kafka.reader import read_topic
    from mmfeat.render import render_record

    n = 0
    for rec in read_topic(settings(), topic, max_records=max_records, timeout_s=timeout, follow=follow):
        n += 1
        if as_json:
            print(json.dumps(rec.as_json(), sort_keys=True), flush=True)
        else:
            out.print(render_record(rec))
    if not as_json:
        console.print(f"tail: {n} record(s) from {topic}")


@app.command()
def profiles(
    features_topic: Annotated[
        str | None, typer.Option(help="Item features to join (default MMFEAT_FEATURES_TOPIC); a new version rebuilds profiles")
    ] = None,
    profiles_topic: Annotated[
        str | None, typer.Option(help="Where profiles go (default MMFEAT_PROFILES_TOPIC), e.g. user.profiles.v2")
    ] = None,
    app_id: Annotated[
        str | None, typer.Option(help="Faust app id: consumer group, internal topics, state (default: per profiles topic)")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="Lookup and /metrics port (default MMFEAT_PROFILES_WEB_PORT)")] = None,
) -> None:
    """Run the Faust app that keeps user interest profiles (engagements + item features -> user.profiles.v1).

    With another --features-topic and --profiles-topic it replays the whole engagement log against those
    features into that topic, beside the live app, then keeps it up to date."""
    from streams.app import run

    base = settings()
    s = settings(features_topic=features_topic, profiles_topic=profiles_topic, profiles_web_port=web_port)
    if app_id is None and s.profiles_topic != base.profiles_topic:
        app_id = f"{s.profiles_app_id}.{profiles_topic}"  # a group of its own: it starts from the log's beginning
    run(s.model_copy(update={"profiles_app_id": app_id}) if app_id else s)


@app.command()
def profile(
    user_id: Annotated[str, typer.Argument(help="The user to look up")],
    url: Annotated[str | None, typer.Option(help="The profiles app (default http://<profiles_web_host>:<profiles_web_port>)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw profile record")] = False,
) -> None:
    """Print a user's interest profile from the running profiles app, tokens decoded back to words."""
    from mmfeat.render import profile_table
    from streams.client import fetch_profile

    s = settings()
    rec = fetch_profile(url or f"http://{s.profiles_web_host}:{s.profiles_web_port}", user_id)
    if as_json:
        print(json.dumps(rec.model_dump(mode="json"), sort_keys=True))
    else:
        out.print(profile_table(rec, s))


@app.command("make-captioner")
def make_captioner(out_dir: Annotated[Path, typer.Option("--out")] = Path("models/captioner"), seed: int = 0) -> None:
    """Write the tiny UNTRAINED captioner (real BLIP-2 architecture, random weights) for tests and benchmarks."""
    from mmfeat.captioner import make_untrained_captioner

    m = make_untrained_captioner(out_dir, seed=seed)
    console.print(f"captioner: wrote {out_dir} version={m.version} (untrained: captions are random words)")


@app.command("train-tokenizers")
def train_tokenizers(
    out_dir: Annotated[Path | None, typer.Option("--out")] = None,
    captions: Annotated[int, typer.Option(help="Corpus size")] = 20000,
    vocab_size: int = 128,
    seed: int = 0,
) -> None:
    """Train tokenizer A (SentencePiece) and tokenizer B (word vocabulary) on the caption corpus."""
    from mmfeat.clipart import caption_corpus
    from mmfeat.normalize import normalize_caption
    from mmfeat.tokenizers import SP_FILE, WORD_FILE, build_word_vocab, train_sentencepiece

    target = out_dir or load_settings(**_flags).tokenizer_dir
    target.mkdir(parents=True, exist_ok=True)
    corpus = [normalize_caption(c) for c in caption_corpus(captions, seed)]
    train_sentencepiece(corpus, target / SP_FILE, vocab_size)
    words = build_word_vocab(corpus, target / WORD_FILE)
    console.print(f"tokenizers: wrote {target / SP_FILE} ({vocab_size} pieces) and {target / WORD_FILE} ({words} words)")


@app.command("build-clipart-vocab")
def build_clipart_vocab(
    root: Annotated[Path, typer.Option(help="openclipart-png's png/ folder")] = Path("/usr/share/openclipart/png"),
    dictionary: Annotated[Path, typer.Option(help="An English word list (Debian's wamerican)")] = Path("/usr/share/dict/american-english"),
) -> None:
    """Rebuild assets/clipart_vocab.json: object names with 3+ distinct drawings (committed; rarely needed)."""
    from mmfeat.clipart import VOCAB_FILE, build_vocabulary

    vocab = build_vocabulary(root, dictionary)
    VOCAB_FILE.write_text(
        json.dumps({"source": f"{root}, built by mmfeat build-clipart-vocab", "names": vocab}, indent=1, sort_keys=True) + "\n"
    )
    console.print(f"clipart: {len(vocab)} names, {sum(map(len, vocab.values()))} drawings -> {VOCAB_FILE}")


@app.command("train-captioner")
def train_captioner(
    out_dir: Annotated[Path, typer.Option("--out")] = Path("models/captioner"),
    seed: int = 0,
    scenes: Annotated[int, typer.Option(help="Training scenes to generate")] = 8000,
    epochs: int = 12,
) -> None:
    """Train the default captioner (Lite0 -> Q-Former -> LLaMA) on generated clip-art scenes; seeded."""
    from mmfeat.train_captioner import train

    result = train(out_dir, seed=seed, scenes_n=scenes, epochs=epochs)
    console.print(
        f"captioner: wrote {out_dir} version={result.version} in {result.seconds / 60:.1f} min; loss curve {out_dir / 'loss.png'}"
    )


@app.command("eval-captioner")
def eval_captioner(
    model_dir: Annotated[Path, typer.Option("--model")] = Path("models/captioner"),
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    quick: Annotated[bool, typer.Option(help="A small held-out subset (tests)")] = False,
) -> None:
    """Caption quality on held-out scenes vs the untrained model, nearest-neighbour retrieval and an ImageNet-label template."""
    from mmfeat.caption_eval import evaluate
    from mmfeat.render import quality_table

    results = evaluate(model_dir, out_dir, quick=quick)
    out.print(quality_table(results))
    console.print(f"eval: wrote {out_dir / 'caption_quality.json'} and {out_dir / 'caption_examples.png'}")


@app.command()
def demo(
    images: Annotated[Path | None, typer.Option(help="Folder of images (default: the clip-art drawings the captioner knows)")] = None,
    count: Annotated[int, typer.Option(help="How many images to upload")] = 300,
    rate: Annotated[float, typer.Option(help="Uploads per second")] = 30.0,
    users: Annotated[int, typer.Option(help="Simulated users engaging with the captioned items")] = 40,
    engagements: Annotated[int, typer.Option(help="Engagements they make")] = 3000,
    seed: int = 0,
) -> None:
    """Fresh services; upload real images and caption them all; then engagements -> user interest profiles."""
    from mmfeat.demo import run_demo

    run_demo(load_settings(**_flags), images=images, count=count, seed=seed, rate=rate, profile_users=users, engagements=engagements)


@app.command("eval")
def eval_ranker(
    seed: Annotated[int, typer.Option(help="Which simulated world")] = 0,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results/eval"),
    quick: Annotated[bool, typer.Option(help="A small world (tests)")] = False,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per variant (default: chosen by early stopping)")] = None,
    train_seeds: Annotated[int | None, typer.Option(help="Training runs per variant, metrics averaged (default 5; 2 with --quick)")] = None,
    world: Annotated[list[str] | None, typer.Option("--set", help="A world setting, NAME=VALUE (users, impressions, w_names, ...)")] = None,
) -> None:
    """The paper's offline tables on a simulated world: MM-LLM features in a DLRM-style ranker vs a visual baseline."""
    from ranking.evaluate import run

    pairs = [w.split("=", 1) for w in world or []]
    if any(len(p) != 2 for p in pairs):
        raise MmfeatError("--set takes NAME=VALUE")
    run(
        load_settings(**_flags), seed=seed, out_dir=out_dir, quick=quick, epochs=epochs, world_settings=dict(pairs), train_seeds=train_seeds
    )
    out.print((out_dir / "report.md").read_text())
    console.print(f"eval: wrote {out_dir / 'report.md'}, report.json and report.png")


@app.command("export-training-data")
def export_training_data(
    out_file: Annotated[Path, typer.Option("--out", help="Parquet file to write")] = Path("training-data.parquet"),
    tokenizers: Annotated[str, typer.Option(help="Comma-separated item token lists to include")] = "sp,word",
) -> None:
    """Engagements joined with item features and point-in-time profiles, from the topics, as Parquet."""
    from tqdm import tqdm

    from ranking.export import export_training_data as export

    names = tuple(t for t in tokenizers.split(",") if t)
    with tqdm(desc="export", unit="engagement", file=sys.stderr) as bar:
        summary = export(settings(), out_file, tokenizers=names, progress=lambda k: bar.update(k - bar.n))
    console.print(f"export: {summary.rows} rows -> {summary.path}; {summary.without_features} engagement(s) left out: no item features")


@app.command()
def bench(
    which: Annotated[str, typer.Argument(help="worker | captioner | profiles | backfill | ranker")],
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    quick: bool = False,
) -> None:
    """Run a benchmark side by side with its baseline and write results/<name>.json."""
    from bench import run as bench_run

    path = bench_run.main(which, out_dir=out_dir, quick=quick)
    console.print(f"bench: wrote {path}")


def main() -> None:
    install_log_escaping()
    try:
        app()
    except (MmfeatError, KafkaException) as e:  # KafkaException: a client call we did not wrap; still one line
        text = e.args[0].str() if isinstance(e, KafkaException) and e.args and hasattr(e.args[0], "str") else str(e)
        console.print(f"[red]error:[/red] {escape(clean(text, 2000))}")
        sys.exit(1)
