"""`mmfeat bench ranker`: the ranker's training throughput with vs without the MM-LLM features, side by
side, for over-arches of growing size.

The token lists add work per example: the pooling product, a wider interaction, and so a wider input
to the over-arch's first layer (22 -> 61 numbers with item tokens and five profiles). The ratio depends
on how much the rest of the step costs. The eval ranker is small (a 64-32 over-arch); production rankers
are far wider. Each shape is measured with ``ranking.train.step_throughput``, the function `mmfeat eval`
reports from.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmfeat.settings import load_settings
from ranking.evaluate import QUICK, VARIANTS, world_dataset
from ranking.model import RankerConfig
from ranking.train import step_throughput
from ranking.world import WorldConfig

OVER_ARCHES: tuple[tuple[int, ...], ...] = (tuple(RankerConfig.over), (256, 128), (512, 256, 128), (1024, 512, 256))
BATCH = 512


def bench_ranker(quick: bool, out_dir: Path) -> dict[str, Any]:
    cfg = QUICK if quick else WorldConfig()
    ds = world_dataset(cfg, load_settings())
    rows = np.arange(len(ds) * 7 // 8)
    base, full = VARIANTS[0], VARIANTS[-1]
    shapes = OVER_ARCHES[:2] if quick else OVER_ARCHES
    sizes = {"steps": 5, "rounds": 2} if quick else {}
    points = []
    for over in tqdm(shapes, desc="over-arches", file=sys.stderr):
        r = step_throughput(ds, rows, VARIANTS, seed=0, batch=BATCH, overrides={"over": over}, **sizes)
        without, with_ = r[base.name]["step"], r[full.name]["step"]
        points.append({
            "over": list(over), "examples_per_s": {name: m["step"] for name, m in r.items()},
            "examples_per_s_prepare_and_step": {name: m["prepare_and_step"] for name, m in r.items()},
            "step_ms_without": 1e3 * BATCH / without, "step_ms_with": 1e3 * BATCH / with_,
            "extra_us_per_example": 1e6 * (1 / with_ - 1 / without), "ratio": with_ / without,
            "ratio_item_tokens_a": r[VARIANTS[1].name]["step"] / without,
        })  # fmt: skip
        print(f"over-arch {'-'.join(map(str, over)):>13}: {points[-1]['step_ms_without']:.2f} ms/step without, "
              f"{points[-1]['step_ms_with']:.2f} with the MM-LLM features, ratio {points[-1]['ratio']:.2f}", file=sys.stderr)  # fmt: skip
    plot(points, out_dir / "bench_ranker.png")
    return {
        "world": {"users": cfg.users, "items": cfg.items, "impressions": cfg.impressions}, "batch": BATCH,
        "with": full.name, "without": base.name, "method": "model step (forward, backward, Adam), fresh models on the same "
        "pre-assembled batches, alternating rounds, median (ranking.train.step_throughput)", "points": points,
    }  # fmt: skip


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["-".join(map(str, p["over"])) for p in points]
    x = np.arange(len(points))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].bar(x - 0.2, [p["step_ms_without"] for p in points], 0.4, label="without MM-LLM features", color="#8c8c8c")
    axes[0].bar(x + 0.2, [p["step_ms_with"] for p in points], 0.4, label="item tokens + profiles", color="#dd8452")
    axes[0].set_ylabel(f"ms per step (batch {BATCH})")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [p["ratio"] for p in points], "o-", color="#4c72b0", label="item tokens + profiles")
    axes[1].plot(x, [p["ratio_item_tokens_a"] for p in points], "s--", color="#55a868", label="item tokens A")
    axes[1].axhline(0.9, color="#c44e52", lw=0.8, ls=":", label="goal 0.9")
    axes[1].set_ylabel("training throughput ratio")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("over-arch widths")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
