"""Increments: one variant's gains over a smaller one, from the same run's per-subset metrics."""

from __future__ import annotations

from typing import Any

from ranking.evaluate import INCREMENTS, increments_tables
from ranking.metrics import ne_gain
from ranking.report import increment_lines


def metrics(ne: float, auc: float, jitter: float) -> dict[str, dict[str, float]]:
    return {t: {"ne": ne + jitter, "auc": auc} for t in ("like", "share")}


def variant(ne: float, auc: float, jitters: tuple[float, ...] = (0.0, 0.002, -0.001, 0.003, 0.001)) -> dict[str, Any]:
    subsets = [metrics(ne, auc, j) for j in jitters]
    return {"tasks": metrics(ne, auc, 0.0), "subsets": subsets, "slices": {"new": {"tasks": metrics(ne, auc, 0.0), "subsets": subsets}}}


def test_a_variant_is_measured_against_the_smaller_one_it_contains() -> None:
    names = {n for pair in INCREMENTS for n in pair}
    results: dict[str, Any] = {"variants": {n: variant(0.95, 0.70) for n in names}, "slice_tables": {"new": []}}
    # about 1 point of NE better on every subset
    results["variants"]["+ item tokens A + post text + OCR + ASR"] = variant(0.94, 0.72, (0.0005, 0.0015, -0.001, 0.0035, 0.0005))
    tables = increments_tables(results)
    assert set(tables) == {"all", "new"} and [r["reference"] for r in tables["all"]] == [ref for ref, _ in INCREMENTS]
    rows = {r["variant"]: r for r in tables["new"]}
    better = rows["+ item tokens A + post text + OCR + ASR"]
    assert abs(better["ne_gain"] - ne_gain(0.95, 0.94)) < 1e-12 and better["p_ne"] < 1e-4
    same = rows["+ item tokens A + C prefixes"]
    assert same["ne_gain"] == 0.0 and same["auc_gain"] == 0.0
    lines = increment_lines(results | {"increments": tables})
    assert lines[0].startswith("## Increments") and len([x for x in lines if x.startswith("| + item tokens A |")]) == 2 * len(INCREMENTS)
