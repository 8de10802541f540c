"""`mmfeat eval`: the paper's offline tables on a simulated world with known truth.

Table 1 analog: variants vs the baseline (IDs + dense + frozen visual embedding), AUC gain (relative
reduction of 1 - AUC) and NE gain averaged over tasks, with paired t-tests over non-overlapping
evaluation subsets. Table 2 analog: NE change per task for the full model. Ablation, shuffle feature
importance, and training throughput with vs without the MM-LLM features. Writes report.md,
report.json and PNG plots to ``out_dir``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS
from mmfeat.errors import ConfigError
from mmfeat.profile import ProfileConfig
from mmfeat.settings import Settings
from mmfeat.tokenizers import TOKENIZERS
from ranking.dataset import OTHER_SOURCES, PROFILE_EVENTS, Dataset, Jagged, build_dataset
from ranking.metrics import auc, auc_gain, ne_gain, normalized_entropy, paired_ttest
from ranking.report import SUBSETS, TAIL_SHARE, write_report
from ranking.train import Variant, predict, select_epochs, step_throughput, train
from ranking.world import DAY, TASKS, WorldConfig, build_world, caption_items

PROFILE_LISTS = tuple(f"profile_{e}" for e in PROFILE_EVENTS)
SEMANTIC = ("item_sid", "item_sid_prefix")
WORD_SOURCES = tuple(OTHER_SOURCES.values())
VARIANTS = (
    Variant("baseline", (), "IDs + dense + frozen visual-encoder embedding (the paper's production baseline)"),
    *(
        Variant(f"+ item tokens {spec.label}", (f"item_{name}",), f"MM-LLM {spec.summary} (tokenizer {spec.label})")
        for name, spec in TOKENIZERS.items()
        if spec.ranker
    ),
    Variant("+ content embedding", (), "the captioner's pooled Q-Former embedding, through the dense arch", content=True),
    Variant("+ item tokens A + C codes", ("item_sp", "item_sid"), "caption tokens A and semantic-ID codes"),
    Variant("+ item tokens A + C prefixes", ("item_sp", "item_sid_prefix"), "caption tokens A and semantic-ID prefix tokens"),
    Variant("+ item tokens A + content embedding", ("item_sp",), "caption tokens A and the content embedding", content=True),
    Variant(
        "+ item tokens A + user profiles A",
        ("item_sp", *PROFILE_LISTS),
        "+ user interest profiles per event type (tokenizer A), pooled as one bag",
    ),
    Variant("+ post text", ("item_post_hash",), "the post's own text (title, text, tags), hashed words"),
    Variant("+ on-screen text (OCR)", ("item_ocr_hash",), "text the OCR model read on the picture, hashed words"),
    Variant("+ speech (ASR)", ("item_asr_hash",), "what the ASR model heard, hashed words"),
    Variant("+ item tokens A + post text + OCR + ASR", ("item_sp", *WORD_SOURCES), "caption tokens A and the three other sources' words"),
    Variant(
        "+ all content features",
        ("item_sp", *WORD_SOURCES, *SEMANTIC, *PROFILE_LISTS),
        "caption tokens A, post text, OCR and ASR, semantic-ID codes and prefixes, the content embedding and user profiles A",
        content=True,
    ),
)
QUICK = WorldConfig(users=60, items=80, owners=12, impressions=6000)


def task_metrics(labels: np.ndarray, probs: np.ndarray, tasks: Sequence[str] = TASKS) -> dict[str, dict[str, float]]:
    """AUC and NE of each of ``tasks``."""
    return {
        t: {"auc": auc(labels[:, i], probs[:, i]), "ne": normalized_entropy(labels[:, i], probs[:, i])}
        for i, t in enumerate(TASKS)
        if t in tasks
    }


def defined_tasks(labels: np.ndarray, row_sets: Sequence[np.ndarray]) -> list[str]:
    """The tasks with both labels present in every row set: those a slice's metrics can be computed for (a small
    slice may hold no share at all in some subset)."""
    return [t for i, t in enumerate(TASKS) if all(0 < labels[rows, i].sum() < len(rows) for rows in row_sets)]


def mean_metrics(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each task's metrics averaged over runs (training seeds)."""
    return {t: {k: float(np.mean([r[t][k] for r in runs])) for k in runs[0][t]} for t in runs[0]}


def mean_over_tasks(m: dict[str, dict[str, float]], key: str) -> float:
    return float(np.mean([m[t][key] for t in m]))


def world_config(seed: int, quick: bool, overrides: dict[str, str] | None = None) -> WorldConfig:
    """The default (or quick) world with ``name=value`` overrides of WorldConfig fields, checked by name and type."""
    cfg = replace(QUICK if quick else WorldConfig(), seed=seed)
    known = {f.name: f for f in fields(WorldConfig)}
    changes: dict[str, Any] = {}
    for name, text in (overrides or {}).items():
        if name not in known or name == "seed":
            raise ConfigError(f"unknown world setting {name!r}; one of: {', '.join(sorted(set(known) - {'seed'}))}")
        kind = type(getattr(cfg, name))
        try:
            changes[name] = kind(text)
        except ValueError as e:
            raise ConfigError(f"world setting {name}={text!r} is not a {kind.__name__}") from e
    return replace(cfg, **changes)


def world_dataset(cfg: WorldConfig, settings: Settings) -> Dataset:
    """The world's examples with their features: items captioned by the default captioner, point-in-time profiles."""
    with tqdm(total=cfg.items, desc="caption items", unit="item", file=sys.stderr) as bar:
        captioned = caption_items(cfg, settings, progress=lambda k: bar.update(k - bar.n))
    world = build_world(cfg, captioned)
    profile_cfg = ProfileConfig(event_weights=DEFAULT_EVENT_WEIGHTS, half_life_s=7 * DAY, top_k=16)
    return build_dataset(world, profile_cfg, "sp")


def run(
    settings: Settings,
    *,
    seed: int,
    out_dir: Path,
    quick: bool = False,
    epochs: int | None = None,
    world_settings: dict[str, str] | None = None,
    train_seeds: int | None = None,
) -> dict[str, Any]:
    """``train_seeds``: each variant is trained this many times (seeds ``seed + 1000k``) and its metrics, per
    evaluation subset too, are means over them, so that training noise does not drown a difference between
    variants; the ablation and shuffle importance use the first."""
    started = time.perf_counter()
    cfg = world_config(seed, quick, world_settings)
    max_epochs = 3 if quick else 8
    train_seeds = train_seeds or (2 if quick else 5)
    ds = world_dataset(cfg, settings)
    n = len(ds)
    cut = n * 7 // 8  # 7:1 by time (impressions are in time order)
    train_rows, eval_rows = np.arange(cut), np.arange(cut, n)
    subsets = np.array_split(np.random.default_rng(seed).permutation(eval_rows), SUBSETS)

    slices = item_slices(ds, train_rows, eval_rows)
    results, models = train_variants(
        ds, train_rows, eval_rows, subsets, epochs=epochs, max_epochs=max_epochs, train_seeds=train_seeds, seed=seed, slices=slices
    )
    table1 = gains_table(results)
    slice_tables = {name: gains_table(results, name) for name in slices}
    results["slice_tables"] = slice_tables
    base = results["variants"]["baseline"]
    full = VARIANTS[-1]
    full_r = results["variants"][full.name]
    table2 = {t: -ne_gain(base["tasks"][t]["ne"], full_r["tasks"][t]["ne"]) for t in TASKS}  # relative NE change (negative = better)
    ablation, importance = ablation_and_importance(ds, eval_rows, models[full.name], full, base, full_r, seed)
    ranked = sorted(importance, key=lambda f: -importance[f])

    side_by_side = step_throughput(ds, train_rows, [VARIANTS[0], full], seed=seed)
    without, with_ = side_by_side[VARIANTS[0].name], side_by_side[full.name]
    speed = {
        "without_mmllm": without["step"], "with_mmllm": with_["step"], "ratio": with_["step_ratio"],
        "with_mmllm_prepare_and_step": with_["prepare_and_step"], "ratio_prepare_and_step": with_["prepare_and_step_ratio"],
    }  # fmt: skip
    results.update(
        slices={name: slice_summary(ds, eval_rows, rows, subsets) for name, rows in slices.items()}, slice_tables=slice_tables,
        increments=increments_tables(results),
        world=asdict(cfg), epochs={k: v["epochs"] for k, v in results["variants"].items()},
        examples={"train": int(cut), "eval": int(n - cut)}, train_seeds=train_seeds, table1=table1, table2=table2,
        ablation=ablation, importance=importance, importance_rank=ranked,
        training_qps=speed,
        label_rates={t: float(ds.labels[:, i].mean()) for i, t in enumerate(TASKS)}, seconds=time.perf_counter() - started,
    )  # fmt: skip
    write_report(results, out_dir)
    return results


def train_variants(
    ds: Dataset,
    train_rows: np.ndarray,
    eval_rows: np.ndarray,
    subsets: list[np.ndarray],
    *,
    epochs: int | None,
    max_epochs: int,
    train_seeds: int,
    seed: int,
    slices: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every variant trained ``train_seeds`` times: its metrics (means over the seeds, per evaluation subset too, and
    per subset within each slice: the eval rows ``slices[name]`` selects), and its first model."""
    results: dict[str, Any] = {"variants": {}}
    models = {}
    cut = int(eval_rows[0])
    for v in tqdm(VARIANTS, desc="train variants", file=sys.stderr):
        # the epoch count: given, or chosen per variant on the end of the training period, then trained on all of it
        chosen, curve = (epochs, []) if epochs else select_epochs(ds, train_rows, v, max_epochs=max_epochs, seed=seed)
        runs = []
        for k in range(train_seeds):
            model, qps = train(ds, train_rows, v, epochs=chosen, seed=seed + 1000 * k)
            runs.append((model, qps, predict(model, ds, eval_rows, v)))
        models[v.name] = runs[0][0]
        by_seed = [task_metrics(ds.labels[eval_rows], probs) for _, _, probs in runs]
        # eval rows are cut..n-1
        per_subset = [mean_metrics([task_metrics(ds.labels[s], probs[s - cut]) for _, _, probs in runs]) for s in subsets]
        by_slice = {}
        for name, mask in (slices or {}).items():
            within = [s[mask[s - cut]] for s in subsets]
            tasks = defined_tasks(ds.labels, within)
            by_slice[name] = {
                "tasks": mean_metrics([task_metrics(ds.labels[eval_rows[mask]], probs[mask], tasks) for _, _, probs in runs]),
                "subsets": [mean_metrics([task_metrics(ds.labels[w], probs[w - cut], tasks) for _, _, probs in runs]) for w in within],
            }
        results["variants"][v.name] = {
            "description": v.description, "lists": list(v.lists), "content_embedding": v.content, "train_examples_per_s": runs[0][1],
            "epochs": chosen, "validation_ne_by_epoch": curve, "tasks": mean_metrics(by_seed), "tasks_by_seed": by_seed,
            "subsets": per_subset, "slices": by_slice,
        }  # fmt: skip
    return results, models


def item_slices(ds: Dataset, train_rows: np.ndarray, eval_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Masks over ``eval_rows``: ``new`` items (no impression in the training period: first seen in evaluation)
    and ``tail`` items (seen in training, among the TAIL_SHARE of those with the fewest training impressions)."""
    seen = np.bincount(ds.item[train_rows], minlength=len(ds.visual))
    trained = np.flatnonzero(seen > 0)
    order = trained[np.argsort(seen[trained], kind="stable")]
    tail = np.zeros(len(seen), dtype=bool)
    tail[order[: max(1, int(len(order) * TAIL_SHARE))]] = True
    items = ds.item[eval_rows]
    return {"new": seen[items] == 0, "tail": tail[items]}


def slice_summary(ds: Dataset, eval_rows: np.ndarray, mask: np.ndarray, subsets: list[np.ndarray]) -> dict[str, Any]:
    cut = int(eval_rows[0])
    rows = eval_rows[mask]
    return {
        "eval_examples": int(mask.sum()), "share_of_eval": float(mask.mean()), "items": len(np.unique(ds.item[rows])),
        "examples_per_subset": [int(mask[s - cut].sum()) for s in subsets],
        "positives": {t: int(ds.labels[rows, i].sum()) for i, t in enumerate(TASKS)},
    }  # fmt: skip


# What a feature adds on top of another: (the variant without it, the variant with it)
INCREMENTS = (
    ("+ item tokens A", "+ item tokens A + post text + OCR + ASR"),
    ("+ item tokens A", "+ item tokens A + C prefixes"),
    ("+ item tokens A", "+ item tokens A + content embedding"),
    ("+ item tokens A", "+ item tokens A + user profiles A"),
)


def gains_table(
    results: dict[str, Any], within: str | None = None, reference: str = "baseline", names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The paper's Table 1: each variant's AUC and NE gain over the baseline (or ``reference``), with paired t-tests
    over the subsets; ``within``: on one slice's examples only."""

    def view(name: str) -> dict[str, Any]:
        r = results["variants"][name]
        return r if within is None else r["slices"][within]

    base = view(reference)
    table1 = []
    for name in names or [v.name for v in VARIANTS[1:]]:
        r = view(name)
        tasks = list(base["tasks"])
        a_gain = float(np.mean([auc_gain(base["tasks"][t]["auc"], r["tasks"][t]["auc"]) for t in tasks]))
        n_gain = float(np.mean([ne_gain(base["tasks"][t]["ne"], r["tasks"][t]["ne"]) for t in tasks]))
        _, p_ne = paired_ttest([mean_over_tasks(m, "ne") for m in base["subsets"]], [mean_over_tasks(m, "ne") for m in r["subsets"]])
        _, p_auc = paired_ttest([mean_over_tasks(m, "auc") for m in base["subsets"]], [mean_over_tasks(m, "auc") for m in r["subsets"]])
        table1.append({"variant": name, "auc_gain": a_gain, "ne_gain": n_gain, "p_ne": p_ne, "p_auc": p_auc, "tasks": tasks})
    return table1


def increments_tables(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each INCREMENTS pair: the larger variant's gains over the smaller one, overall and within each slice."""
    out: dict[str, list[dict[str, Any]]] = {}
    for within in (None, *results.get("slice_tables", {})):
        rows = []
        for ref, name in INCREMENTS:
            (row,) = gains_table(results, within, reference=ref, names=[name])
            rows.append(row | {"reference": ref})
        out[within or "all"] = rows
    return out


def ablation_and_importance(
    ds: Dataset, eval_rows: np.ndarray, model: Any, full: Variant, base: dict[str, Any], full_r: dict[str, Any], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The full model scored with its MM-LLM features emptied, and its shuffle importance per feature."""
    empty = _emptied(ds, full.lists)
    ablated = task_metrics(ds.labels[eval_rows], predict(model, empty, eval_rows, full))
    first = full_r["tasks_by_seed"][0]  # the model that the ablation and the importance score
    ablation = {
        "ne_full": mean_over_tasks(first, "ne"), "ne_mmllm_features_emptied": mean_over_tasks(ablated, "ne"),
        "ne_retrained_without": mean_over_tasks(base["tasks"], "ne"),
    }  # fmt: skip
    # shuffle feature importance on the full model: NE increase when one feature is read from another example
    rng = np.random.default_rng(seed + 1)
    importance = {}
    ne_full = mean_over_tasks(first, "ne")
    for feat in ("user", "item", "owner", "dense", "visual", *(("content",) if full.content else ()), *full.lists):
        perm = rng.permutation(eval_rows)
        shuffled = task_metrics(ds.labels[eval_rows], predict(model, ds, eval_rows, full, {feat: perm}))
        importance[feat] = mean_over_tasks(shuffled, "ne") - ne_full
    return ablation, importance


def _emptied(ds: Dataset, lists: tuple[str, ...]) -> Dataset:
    """The same examples with every given id list empty."""

    def empty(j: Jagged) -> Jagged:
        return Jagged(np.zeros(0, np.int64), np.zeros_like(j.starts), None if j.weights is None else np.zeros(0, np.float32))

    return replace(
        ds,
        item_lists={k: empty(v) if k in lists else v for k, v in ds.item_lists.items()},
        profile_lists={k: empty(v) if k in lists else v for k, v in ds.profile_lists.items()},
    )
