"""Training and scoring of the ranker on a Dataset: batches, the training loop, predictions (optionally with
one feature shuffled across examples, for shuffle feature importance)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ranking.dataset import Dataset
from ranking.metrics import normalized_entropy
from ranking.model import DLRMRanker, IdList, MultiTaskLoss, RankerConfig
from ranking.world import TASKS


@dataclass(frozen=True)
class Variant:
    name: str
    lists: tuple[str, ...]  # which token-list features the model gets; IDs, dense and visual always
    description: str
    content: bool = False  # the captioner's content embedding joins the dense features (through the dense arch)


# semantic-ID codes and prefix tokens, when a variant reads both, pooled as one bag: one vector in the interaction
SEMANTIC_BAG = ("item_sid", "item_sid_prefix")


def model_config(ds: Dataset, variant: Variant, overrides: Mapping[str, Any] | None = None) -> RankerConfig:
    """The ranker for ``variant`` on ``ds``; ``overrides``: other RankerConfig fields (e.g. ``over``). The
    profile lists (one per event type) are pooled as one bag, ``profile``: the sum of the event types'
    weighted bags."""
    profiles = tuple(n for n in variant.lists if n.startswith("profile_"))
    cfg = RankerConfig(
        n_users=int(ds.user.max()) + 1, n_items=len(ds.visual), n_owners=int(ds.owner.max()) + 1,
        dense_dim=ds.dense.shape[1], visual_dim=ds.visual.shape[1] + (ds.content.shape[1] if variant.content else 0),
        lists={n: ds.vocab[n] for n in variant.lists},
        weighted=frozenset(profiles), tasks=TASKS, shared={n: ds.table_of[n] for n in variant.lists},
        bags=({"profile": profiles} if profiles else {}) | ({"semantic": SEMANTIC_BAG} if set(SEMANTIC_BAG) <= set(variant.lists) else {}),
    )  # fmt: skip
    return replace(cfg, **(overrides or {}))


def optimizer(model: DLRMRanker) -> torch.optim.Optimizer:
    """Adam with torch's fused kernel: the same update as the default per-tensor loop in about half its time,
    which here saves about a tenth of a training step."""
    return torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5, fused=True)


def make_batch(
    ds: Dataset, rows: np.ndarray, variant: Variant, shuffle: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, IdList], torch.Tensor, torch.Tensor]:
    """``shuffle`` maps a feature name to a permutation of ``rows`` that feature is read from instead."""
    sh = shuffle or {}
    lists = variant.lists
    src = {name: sh.get(name, rows) for name in ("user", "item", "owner", "dense", "visual", "content", *lists)}
    ids = {
        "user": torch.from_numpy(ds.user[src["user"]]),
        "item": torch.from_numpy(ds.item[src["item"]]),
        "owner": torch.from_numpy(ds.owner[src["owner"]]),
    }
    out_lists = {}
    for name in lists:
        if name.startswith("item_"):
            out_lists[name] = ds.item_lists[name].gather(ds.item[src[name]])
        else:
            out_lists[name] = ds.profile_lists[name].gather(src[name])
    parts = [ds.dense[src["dense"]], ds.visual[ds.item[src["visual"]]]]
    if variant.content:
        parts.append(ds.content[ds.item[src["content"]]])
    dense = torch.from_numpy(np.concatenate(parts, axis=1))
    return ids, out_lists, dense, torch.from_numpy(ds.labels[rows])


def train(
    ds: Dataset, rows: np.ndarray, variant: Variant, *, epochs: int, seed: int, batch: int = 512,
    after_epoch: Callable[[DLRMRanker], None] | None = None,
) -> tuple[DLRMRanker, float]:  # fmt: skip
    """Train from scratch; return the model and its training throughput (examples per second of model steps)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, loss_fn = DLRMRanker(model_config(ds, variant)), MultiTaskLoss()
    opt = optimizer(model)
    seen, spent = 0, 0.0
    for _ in range(epochs):
        order = rng.permutation(rows)
        for start in range(0, len(order), batch):
            ids, id_lists, dense, labels = make_batch(ds, order[start : start + batch], variant)
            # batch assembly, pooling layout included, is the readers' job (parallel in production): timed apart
            layout = model.embeddings.prepare(ids, id_lists)
            t0 = time.perf_counter()
            opt.zero_grad()
            loss_fn(model(layout, dense), labels).backward()
            opt.step()
            spent += time.perf_counter() - t0
            seen += len(labels)
        if after_epoch:
            after_epoch(model.eval())
            model.train()
    return model.eval(), seen / spent


def select_epochs(ds: Dataset, rows: np.ndarray, variant: Variant, *, max_epochs: int, seed: int) -> tuple[int, list[float]]:
    """Early stopping without touching the evaluation period: train on the first 7/8 of ``rows`` (time order)
    and score the last 1/8 after every epoch; the epoch count with the lowest mean NE over tasks, and the
    curve. Per-user embeddings overfit within a few epochs when users have little history."""
    cut = len(rows) * 7 // 8
    fit, valid = rows[:cut], rows[cut:]
    curve: list[float] = []

    def score(model: DLRMRanker) -> None:
        probs = predict(model, ds, valid, variant)
        curve.append(float(np.mean([normalized_entropy(ds.labels[valid, t], probs[:, t]) for t in range(len(TASKS))])))

    train(ds, fit, variant, epochs=max_epochs, seed=seed, after_epoch=score)
    return int(np.argmin(curve)) + 1, curve


def step_throughput(
    ds: Dataset, rows: np.ndarray, variants: Sequence[Variant], *, seed: int, batch: int = 512, steps: int = 30, rounds: int = 15,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Training examples per second of each variant, measured side by side: fresh models on the same
    pre-assembled batches, the variants taking turns step by step; the median over rounds.

    ``step``: the model step (forward, backward, optimizer) on batches that the reader has laid out for
    pooling; ``prepare_and_step``: that layout (``EmbeddingArch.prepare``) done in the timed loop too.
    ``<mode>_ratio``: the variant's rate over the first variant's in the same round, median over rounds;
    taking turns and pairing the rounds cancel most of the drift in this shared machine's speed.
    ``overrides``: RankerConfig fields for every variant (bench/ranker.py sizes the over-arch)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(rows, batch, replace=False) for _ in range(steps)]
    setups = []
    for v in variants:
        model, loss_fn = DLRMRanker(model_config(ds, v, overrides)), MultiTaskLoss()
        opt = optimizer(model)
        batches = [make_batch(ds, r, v) for r in chosen]
        prepared = [model.embeddings.prepare(ids, lists) for ids, lists, _, _ in batches]  # the reader's layout, once
        setups.append((v, model, loss_fn, opt, batches, prepared))
    modes = ("step", "prepare_and_step")
    rates = {v.name: {mode: np.zeros(rounds) for mode in modes} for v in variants}
    for r in range(rounds + 1):
        for mode in modes:
            spent = dict.fromkeys(rates, 0.0)
            for i in range(steps):  # every variant takes step i before any takes step i + 1, in a rotating order
                for v, model, loss_fn, opt, batches, prepared in setups[i % len(setups) :] + setups[: i % len(setups)]:
                    ids, lists, dense, labels = batches[i]
                    t0 = time.perf_counter()
                    opt.zero_grad()
                    layout = prepared[i] if mode == "step" else model.embeddings.prepare(ids, lists)
                    loss_fn(model(layout, dense), labels).backward()
                    opt.step()
                    spent[v.name] += time.perf_counter() - t0
            if r:  # round 0 warms up
                for name, seconds in spent.items():
                    rates[name][mode][r - 1] = steps * batch / seconds
    first = rates[variants[0].name]
    return {
        name: {mode: float(np.median(by_mode[mode])) for mode in modes}
        | {f"{mode}_ratio": float(np.median(by_mode[mode] / first[mode])) for mode in modes}
        for name, by_mode in rates.items()
    }


@torch.inference_mode()
def predict(model: DLRMRanker, ds: Dataset, rows: np.ndarray, variant: Variant, shuffle: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Probabilities [len(rows), T]."""
    out = []
    for start in range(0, len(rows), 4096):
        part = rows[start : start + 4096]
        sub = {k: v[start : start + 4096] for k, v in (shuffle or {}).items()}
        ids, lists, dense, _ = make_batch(ds, part, variant, sub)
        out.append(torch.sigmoid(model(model.embeddings.prepare(ids, lists), dense)).numpy())
    return np.concatenate(out)
