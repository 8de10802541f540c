"""The captioner and the tokenizers: make, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mmfeat.cli.app import _flags, app, console, out
from mmfeat.settings import DEFAULT_CAPTIONER, load_settings


@app.command("make-captioner")
def make_captioner(out_dir: Annotated[Path, typer.Option("--out")] = Path("models/captioner"), seed: int = 0) -> None:
    """Write the tiny UNTRAINED captioner (real BLIP-2 architecture, random weights) for tests and benchmarks."""
    from captioner.modeling.hf_blip2 import make_untrained_captioner

    m = make_untrained_captioner(out_dir, seed=seed)
    console.print(f"captioner: wrote {out_dir} version={m.version} (untrained: captions are random words)")


EMBEDDING_CORPUS, EMBEDDING_SEED = 2000, 4242  # the committed codebook's corpus: scenes apart from the world's and the tests'


@app.command("make-asr")
def make_asr(out_dir: Annotated[Path, typer.Option("--out")] = Path("models/asr-whisper"), seed: int = 0) -> None:
    """Write a tiny UNTRAINED Whisper (HF WhisperForConditionalGeneration, random weights) for tests of the ASR model's HF path."""
    from readers.asr import make_untrained_whisper

    version = make_untrained_whisper(out_dir, seed=seed)
    console.print(f"make-asr: wrote {out_dir} ({version}); serve it with triton_models/asr's model_dir")


@app.command("train-tokenizers")
def train_tokenizers(
    out_dir: Annotated[Path | None, typer.Option("--out")] = None,
    captions: Annotated[int, typer.Option(help="Caption corpus size")] = 20000,
    seed: int = 0,
    embeddings: Annotated[int, typer.Option(help="Embedding corpus size (scenes through the captioner), for C")] = EMBEDDING_CORPUS,
    embedding_seed: int = EMBEDDING_SEED,
    captioner: Annotated[Path, typer.Option(help="The captioner whose embeddings C quantizes")] = DEFAULT_CAPTIONER,
    only: Annotated[list[str] | None, typer.Option(help="Train only these tokenizers (by name)")] = None,
) -> None:
    """Train every tokenizer that has files: A (SentencePiece) and B (word vocabulary) on the caption corpus, C (semantic
    IDs) on content embeddings of rendered scenes from the captioner's own call."""
    from captioner.world.clipart import caption_corpus
    from mmfeat.normalize import normalize_caption
    from mmfeat.tokenizers import embedding_trainable, trainable

    target = out_dir or load_settings(**_flags).features.tokenizer_dir
    target.mkdir(parents=True, exist_ok=True)
    text_specs = [s for s in trainable() if not only or s.name in only]
    if text_specs:
        corpus = [normalize_caption(c) for c in caption_corpus(captions, seed)]
        for spec in text_specs:
            assert spec.train is not None
            console.print(f"tokenizers: {spec.name} ({spec.label}): wrote {spec.train(corpus, target)}")
    emb_specs = [s for s in embedding_trainable() if not only or s.name in only]
    if emb_specs:
        vectors, version = _embeddings(embeddings, embedding_seed, captioner)
        meta = {"scenes": "clipart train split", "scene_seed": embedding_seed}
        for spec in emb_specs:
            assert spec.train_embeddings is not None
            console.print(f"tokenizers: {spec.name} ({spec.label}): wrote {spec.train_embeddings(vectors, version, meta, target)}")


def _embeddings(n: int, seed: int, captioner: Path) -> tuple[Any, str]:
    import sys

    from tqdm import tqdm

    from captioner.embeddings import embedding_corpus

    with tqdm(total=n, desc="embed scenes", unit="scene", file=sys.stderr) as bar:
        return embedding_corpus(n, seed, captioner, progress=lambda k: bar.update(k - bar.n))


@app.command("eval-semantic-ids")
def eval_semantic_ids(
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    embeddings: Annotated[int, typer.Option(help="Training embeddings (the committed codebook's corpus)")] = EMBEDDING_CORPUS,
    heldout: Annotated[int, typer.Option(help="Held-out embeddings (other scenes)")] = 500,
    captioner: Annotated[Path, typer.Option(help="The captioner whose embeddings are quantized")] = DEFAULT_CAPTIONER,
) -> None:
    """Codebook shapes side by side (levels x codes): usage, unique full codes, quantization error on held-out scenes."""
    from rich.table import Table

    from mmfeat.semantic_ids import plot_sweep, quality, sweep
    from mmfeat.settings import ASSETS
    from mmfeat.tokenizers.semantic import load_codebook

    train, version = _embeddings(embeddings, EMBEDDING_SEED, captioner)
    held, _ = _embeddings(heldout, EMBEDDING_SEED + 1, captioner)
    points = sweep(train, held, version)
    committed = load_codebook(ASSETS / "tokenizers")
    doc = {
        "captioner_version": version, "train_embeddings": len(train), "heldout_embeddings": len(held),
        "committed": {"shape": committed.shape, "version_digest": committed.digest, "train": quality(committed, train),
                      "heldout": quality(committed, held), "codebook_captioner": committed.captioner_version},
        "shapes": points,
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "semantic_ids.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot_sweep(points, committed.shape, out_dir / "semantic_ids.png")
    table = Table(title=f"semantic-ID codebooks on {version} ({len(train)} train / {len(held)} held-out embeddings)")
    for col in ("shape", "used", "unique", "error", "held-out", "random"):
        table.add_column(col, no_wrap=True)
    for p in points:
        mark = " *" if p["shape"] == committed.shape else ""
        used = "/".join(f"{100 * level['codes_used']:.0f}" for level in p["heldout"]["levels"])
        table.add_row(
            p["shape"] + mark, used, f"{100 * p['heldout']['unique_full_code_share']:.1f}%", f"{p['train']['relative_error']:.3f}",
            f"{p['heldout']['relative_error']:.3f}", f"{p['heldout_random_codebook']['relative_error']:.3f}",
        )  # fmt: skip
    table.caption = (
        "used: % of codes per level used by held-out items; unique: held-out items with a full code of their own; error: relative "
        "quantization error on the training embeddings, held-out: on the others, random: a codebook of random training rows"
    )
    out.print(table)
    console.print(f"eval: wrote {out_dir / 'semantic_ids.json'} and {out_dir / 'semantic_ids.png'} (* the committed codebook)")


@app.command("build-clipart-vocab")
def build_clipart_vocab(
    root: Annotated[Path, typer.Option(help="openclipart-png's png/ folder")] = Path("/usr/share/openclipart/png"),
    dictionary: Annotated[Path, typer.Option(help="An English word list (Debian's wamerican)")] = Path("/usr/share/dict/american-english"),
) -> None:
    """Rebuild captioner/world/clipart_vocab.json: object names with 3+ distinct drawings (committed; rarely needed)."""
    from captioner.world.clipart import VOCAB_FILE, build_vocabulary

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
    from captioner.training.train import train

    result = train(out_dir, seed=seed, scenes_n=scenes, epochs=epochs)
    console.print(
        f"captioner: wrote {out_dir} version={result.version} in {result.seconds / 60:.1f} min; loss curve {out_dir / 'loss.png'}"
    )


@app.command("eval-captioner")
def eval_captioner(
    model_dir: Annotated[
        Path, typer.Option("--model", help="A captioner model directory (default: the served default)")
    ] = DEFAULT_CAPTIONER,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("results"),
    quick: Annotated[bool, typer.Option(help="A small held-out subset (tests)")] = False,
) -> None:
    """Caption quality on held-out scenes vs the untrained model, nearest-neighbour retrieval and an ImageNet-label template."""
    from captioner.evaluation.quality import evaluate
    from mmfeat.cli.render import quality_table

    results = evaluate(model_dir, out_dir, quick=quick)
    out.print(quality_table(results))
    console.print(f"eval: wrote {out_dir / 'caption_quality.json'} and {out_dir / 'caption_examples.png'}")
