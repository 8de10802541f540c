"""`mmfeat eval`'s report: report.md, report.json and report.png from the results ``ranking.evaluate.run`` builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TAIL_SHARE = 0.2  # tail items: the fifth of the items seen in training with the fewest training impressions
SUBSETS = 5  # non-overlapping evaluation subsets the paired t-tests run over


def plot_report(results: dict[str, Any], out: Path) -> None:
    """Table 1's NE gains with their p-values, and the shuffle importance, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    t1 = results["table1"]
    axes[0].barh([r["variant"] for r in t1], [100 * r["ne_gain"] for r in t1], color="#4c72b0")
    for i, r in enumerate(t1):
        axes[0].text(100 * r["ne_gain"], i, f"  p={r['p_ne']:.1e}", va="center", fontsize=8)
    axes[0].set_xlabel("NE gain vs baseline (%)")
    axes[0].set_title("Table 1 analog")
    imp = results["importance"]
    ranked = results["importance_rank"]
    axes[1].barh(
        ranked[::-1],
        [imp[f] for f in ranked[::-1]],
        color=["#dd8452" if f.startswith(("item_", "profile_")) else "#8c8c8c" for f in ranked[::-1]],
    )
    axes[1].set_xlabel("NE increase when shuffled")
    axes[1].set_title("shuffle importance (orange: MM-LLM)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table_rows(table: list[dict[str, Any]]) -> list[str]:
    return [
        f"| {r['variant']} | {100 * r['auc_gain']:.2f}% | {100 * r['ne_gain']:.2f}% | {r['p_ne']:.1e} | {r['p_auc']:.1e} |" for r in table
    ]


def slice_lines(results: dict[str, Any]) -> list[str]:
    """Table 1 again within each slice, with what the slice holds."""
    lines = []
    titles = {
        "new": "new items (first seen in the evaluation period)",
        "tail": f"tail items (the {TAIL_SHARE:.0%} of trained items with fewest impressions)",
    }
    for name, table in results["slice_tables"].items():
        info = results["slices"][name]
        lines += [
            f"### Within {titles.get(name, name)}: {info['eval_examples']} evaluation examples ({100 * info['share_of_eval']:.1f}%), "
            f"{info['items']} items, {min(info['examples_per_subset'])}-{max(info['examples_per_subset'])} per subset",
            "",
            "| variant | AUC gain (1-AUC) | NE gain | p (NE) | p (AUC) |",
            "|---|---|---|---|---|",
            *table_rows(table),
            "",
        ]
    return lines


def increment_lines(results: dict[str, Any]) -> list[str]:
    """What each feature adds on top of the caption's tokens: the gain of one variant over another."""
    if "increments" not in results:
        return []
    lines = [
        "## Increments (gains of a variant over a smaller one, not over the baseline; same paired t-test)",
        "",
        "| over | variant | within | AUC gain (1-AUC) | NE gain | p (NE) | p (AUC) |",
        "|---|---|---|---|---|---|---|",
    ]
    for within, rows in results["increments"].items():
        for r in rows:
            lines.append(
                f"| {r['reference']} | {r['variant']} | {within} | {100 * r['auc_gain']:.2f}% | {100 * r['ne_gain']:.2f}% "
                f"| {r['p_ne']:.1e} | {r['p_auc']:.1e} |"
            )
    return [*lines, ""]


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in results.items() if k != "variants"}
    slim["variants"] = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("subsets", "slices")} | {"subsets": v["subsets"], "slices": v["slices"]}
        for k, v in results["variants"].items()
    }
    (out_dir / "report.json").write_text(json.dumps(slim, indent=1) + "\n")

    plot_report(results, out_dir / "report.png")
    t1 = results["table1"]
    lines = [
        "# Offline evaluation: MM-LLM features in a DLRM-style multi-task ranker",
        "",
        f"Simulated world (seed {results['world']['seed']}): {results['world']['users']} users, {results['world']['items']} items, "
        f"{results['world']['impressions']} impressions over {results['world']['days']:.0f} days; "
        f"train/eval {results['examples']['train']}/{results['examples']['eval']} split 7:1 by time. "
        + (
            "Epochs per variant, chosen by NE on the last 1/8 of the training period (trained on the rest, then retrained on all of it): "
            if any(v["validation_ne_by_epoch"] for v in results["variants"].values())
            else "Epochs per variant (given): "
        )
        + ", ".join(f"{k} {e}" for k, e in results["epochs"].items())
        + f". Each variant is trained with {results['train_seeds']} seeds; its metrics are means over them. Positive rates: "
        + ", ".join(f"{t} {r:.3f}" for t, r in results["label_rates"].items())
        + ".",
        "",
        f"## Table 1 analog (gains vs baseline, averaged over tasks; p: paired t-test over {SUBSETS} non-overlapping evaluation subsets)",
        "",
        "| variant | AUC gain (1-AUC) | NE gain | p (NE) | p (AUC) |",
        "|---|---|---|---|---|",
        *table_rows(t1),
        "",
        *slice_lines(results),
        *increment_lines(results),
        "## Table 2 analog (full model vs baseline, relative NE change per task; negative = better)",
        "",
        "| task | ΔNE |",
        "|---|---|",
        *(f"| {t} | {100 * d:+.2f}% |" for t, d in results["table2"].items()),
        "",
        "## Ablation (average NE over tasks; the first training seed's full model)",
        "",
        f"- full model: {results['ablation']['ne_full']:.4f}",
        f"- full model with its MM-LLM features emptied at evaluation: {results['ablation']['ne_mmllm_features_emptied']:.4f}",
        f"- retrained without them (the baseline): {results['ablation']['ne_retrained_without']:.4f}",
        "",
        "## Shuffle feature importance (full model; NE increase when the feature is shuffled across examples)",
        "",
        *(f"{i + 1}. {f}: {results['importance'][f]:+.4f}" for i, f in enumerate(results["importance_rank"])),
        "",
        "## Training throughput",
        "",
        f"- without MM-LLM features: {results['training_qps']['without_mmllm']:.0f} examples/s",
        f"- with all content features (item tokens A, semantic IDs C, the content embedding, profiles A): "
        f"{results['training_qps']['with_mmllm']:.0f} examples/s "
        f"(ratio {results['training_qps']['ratio']:.3f}; the model step, side by side: the variants take turns step by step "
        "over 30 batches of 512, 15 rounds, median of the per-round ratios)",
        f"- the same, with the pooling layout (`EmbeddingArch.prepare`, a batch reader's job) inside the timed step: "
        f"{results['training_qps']['with_mmllm_prepare_and_step']:.0f} examples/s "
        f"(ratio {results['training_qps']['ratio_prepare_and_step']:.3f})",
        "",
        f"![tables](report.png)  Whole run: {results['seconds']:.0f} s.",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
