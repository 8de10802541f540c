"""`mmfeat train-captioner`: train the default captioner on generated clip-art scenes, seeded.

The encoder's frozen trunk runs once per scene (cached as 192x7x7 maps), so the epochs only run
the fine-tuned encoder tail, the Q-Former and the decoder: minutes on 2 CPU cores, not hours.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from captioner.configuration import LiteConfig
from captioner.modeling.lite import LiteCaptioner, save_model_dir
from captioner.processing import PAD, WordVocab, to_tensor
from captioner.world.clipart import ACTIONS, RELATIONS, DrawingCache, SceneSpec, load_vocabulary, make_splits, plural, scenes
from mmfeat.normalize import normalize_caption

FRAME_WORDS = ["a", "an", "and", "two", "three", "small", "large", "drawing", "of", "on", "white", "background", "side", "by", "next"]


def caption_words(names: list[str]) -> list[str]:
    """Every word a scene caption can contain, in a fixed order (the decoder's vocabulary)."""
    words: list[str] = []
    for w in [*FRAME_WORDS, *(x for r in RELATIONS.values() for x in r.split()), *(v for v, _ in ACTIONS.values())]:
        words.append(w)
    for n in names:
        words += [n, plural(n)]
    return list(dict.fromkeys(words))


def encode_scenes(
    model: LiteCaptioner, spec: SceneSpec, n: int, seed: int, desc: str, batch: int = 32
) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
    """Render ``n`` scenes and run the frozen encoder trunk on them: (n, 192, 7, 7) fp16 and their training targets."""
    cache = DrawingCache()
    trunks, captions, pending = [], [], []
    with tqdm(total=n, desc=desc, unit="scene", file=sys.stderr) as bar:
        for img, scene in scenes(spec, n, seed, cache):
            pending.append(img)
            captions.append(tuple(normalize_caption(c) for c in scene.targets))
            if len(pending) == batch:
                trunks.append(model.trunk(to_tensor(pending)).to(torch.float16))
                bar.update(len(pending))
                pending = []
        if pending:
            trunks.append(model.trunk(to_tensor(pending)).to(torch.float16))
            bar.update(len(pending))
    return torch.cat(trunks), captions


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    version: str
    losses: list[float]
    seconds: float


def train(
    out_dir: Path, *, seed: int = 0, scenes_n: int = 8000, epochs: int = 12, batch: int = 64, lr: float = 1e-3,
    config: LiteConfig | None = None, name: str = "clipart-lite0",
) -> TrainResult:  # fmt: skip
    started = time.monotonic()
    torch.manual_seed(seed)
    config = config or LiteConfig()
    vocab_names = load_vocabulary()
    splits = make_splits(vocab_names, seed=0)  # the world's splits do not depend on the training seed
    vocab = WordVocab(caption_words(sorted(vocab_names)))
    model = LiteCaptioner(config, len(vocab.words))
    trunks, captions = encode_scenes(model, splits.train, scenes_n, seed, "encode scenes")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(captions) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    losses: list[float] = []
    model.train()
    with tqdm(total=steps, desc="train", unit="step", file=sys.stderr) as bar:
        for _epoch in range(epochs):
            order = list(range(len(captions)))
            rng.shuffle(order)
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                seqs = [vocab.encode(rng.choice(captions[i])) for i in idx]  # a random target phrasing each time
                width = max(len(s) for s in seqs)
                ids = torch.tensor([s + [PAD] * (width - len(s)) for s in seqs])
                loss = model.loss(trunks[idx].float(), ids)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss))
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)
    model.eval()
    seconds = time.monotonic() - started
    training = {
        "seed": seed, "scenes": scenes_n, "epochs": epochs, "batch": batch, "lr": lr, "seconds": round(seconds, 1),
        "final_loss": round(sum(losses[-20:]) / min(20, len(losses)), 4),
        "encoder": f"EfficientNet-Lite0 ImageNet, frozen except the last {config.finetune_tail} block(s) and head",
    }  # fmt: skip
    extra = {"training": training}
    manifest = save_model_dir(model, vocab, out_dir, name=name, trained=True, extra=extra)
    (out_dir / "losses.json").write_text(json.dumps([round(x, 4) for x in losses]))
    plot_losses(losses, out_dir / "loss.png")
    return TrainResult(out_dir, manifest.version, losses, seconds)


def plot_losses(losses: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(losses, linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("caption cross-entropy")
    ax.set_yscale("log")
    ax.set_title("captioner training loss")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
