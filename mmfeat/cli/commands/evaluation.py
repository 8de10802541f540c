"""The demo, the ranker's offline evaluation, the training-data export and the benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mmfeat.cli.app import _flags, app, console, out, settings
from mmfeat.errors import MmfeatError
from mmfeat.settings import load_settings


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
    from mmfeat.cli.demo import run_demo

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
    which: Annotated[str, typer.Argument(help="worker | captioner | profiles | backfill | ranker | media | soak")],
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    quick: bool = False,
    minutes: Annotated[float, typer.Option(min=1, help="soak: how long the steady load runs")] = 30.0,
) -> None:
    """Run a benchmark side by side with its baseline and write results/<name>.json (soak: the whole stack under a
    steady load, its memory, lag, freshness and loss; also results/bench_soak.png)."""
    from bench import run as bench_run

    path = bench_run.main(which, out_dir=out_dir, quick=quick, minutes=minutes)
    console.print(f"bench: wrote {path}")


@app.command("eval-media")
def eval_media(
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    videos: Annotated[int, typer.Option(help="scene videos to make and caption")] = 30,
    model: Annotated[Path | None, typer.Option(help="captioner model dir (default: the trained default)")] = None,
) -> None:
    """Frame-caption object recall of videos made offline, against uniform-only and cover-frame baselines; OCR word
    accuracy on rendered text, against the recognizer alone on the whole image; ASR word error rate on spoken
    sentences, against the whole recording decoded after naive resampling."""
    from captioner.evaluation.video import evaluate_videos
    from mmfeat.settings import DEFAULT_CAPTIONER

    results = evaluate_videos(model or DEFAULT_CAPTIONER, out_dir, n=videos)
    for name, systems in results["sets"].items():
        for system, fig in systems.items():
            if isinstance(fig, dict):
                console.print(
                    f"eval-media: {name:<6} {system:<8} object recall {fig['object_recall']:.3f}, segments covered "
                    f"{fig['segment_coverage']:.3f}, {fig['captioner_requests_per_video']} captioner requests per video"
                )
    for name, fig in results.get("ocr", {}).get("sets", {}).items():
        ours, naive = fig["rapidocr"], fig["recognizer_only"]
        console.print(
            f"eval-media: ocr {name:<11} word recall {ours['word_recall']:.3f} (precision {ours['word_precision']:.3f}, "
            f"{ours['images_per_s']} images/s); whole image as one line: {naive['word_recall']:.3f} ({naive['word_precision']:.3f})"
        )
    if "asr" in results:
        a = results["asr"]
        console.print(
            f"eval-media: asr word error rate {a['ours']['wer']:.3f} (in a video's sound track {a['ours_in_video']['wer']:.3f}, "
            f"real-time factor {a['real_time_factor']}); whole recording, naive resampling: {a['naive']['wer']:.3f}"
        )
    console.print(f"eval-media: wrote {out_dir / 'media_quality.json'} and {out_dir / 'media_frames.png'}")
