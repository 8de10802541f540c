"""`mmfeat eval --quick`: the whole evaluation on a small world, with the trained captioner captioning the items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captioner.world.clipart import OPENCLIPART
from mmfeat.settings import load_settings
from ranking.evaluate import VARIANTS, run
from ranking.world import TASKS

pytestmark = pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="Debian's openclipart-png is not installed (make sysdeps)")


def test_quick_eval_writes_every_table(tmp_path: Path) -> None:
    results = run(load_settings(), seed=0, out_dir=tmp_path, quick=True)
    assert {p.name for p in tmp_path.iterdir()} >= {"report.md", "report.json", "report.png"}
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [r["variant"] for r in doc["table1"]] == [v.name for v in VARIANTS[1:]]
    assert all(0.0 <= r["p_ne"] <= 1.0 and 0.0 <= r["p_auc"] <= 1.0 for r in doc["table1"])
    assert set(doc["table2"]) == set(TASKS)
    assert set(doc["importance_rank"]) == {"user", "item", "owner", "dense", "visual", "content", *VARIANTS[-1].lists}
    # the new-item and tail slices: Table 1 within each, for every variant, over the same subsets
    assert set(doc["slice_tables"]) == {"new", "tail"}
    for name, table in doc["slice_tables"].items():
        assert [r["variant"] for r in table] == [v.name for v in VARIANTS[1:]]
        assert doc["slices"][name]["eval_examples"] == sum(doc["slices"][name]["examples_per_subset"]) > 0, name
    assert doc["training_qps"]["with_mmllm"] > 0 and doc["training_qps"]["without_mmllm"] > 0
    # the paired per-round ratio and the ratio of the medians measure one thing on one machine
    assert 0.5 < doc["training_qps"]["ratio"] / (doc["training_qps"]["with_mmllm"] / doc["training_qps"]["without_mmllm"]) < 2
    assert doc["training_qps"]["with_mmllm_prepare_and_step"] > 0
    # metrics are means over the training seeds (quick: 2)
    assert doc["train_seeds"] == 2
    for v in doc["variants"].values():
        assert len(v["tasks_by_seed"]) == 2 and v["tasks_by_seed"][0] != v["tasks_by_seed"][1]
        for t in TASKS:
            assert v["tasks"][t]["ne"] == pytest.approx((v["tasks_by_seed"][0][t]["ne"] + v["tasks_by_seed"][1][t]["ne"]) / 2)
    # each variant's epoch count is the best of its validation curve (quick: at most 3 epochs)
    for name, v in doc["variants"].items():
        curve = v["validation_ne_by_epoch"]
        assert len(curve) == 3 and v["epochs"] == 1 + curve.index(min(curve)) == doc["epochs"][name], name
    # the baseline learns something from IDs, popularity and the visual embedding: above chance on every task
    assert all(results["variants"]["baseline"]["tasks"][t]["auc"] > 0.55 for t in TASKS)
    # the report quotes the figures of the JSON
    md = (tmp_path / "report.md").read_text()
    assert f"{100 * doc['table1'][0]['ne_gain']:.2f}%" in md
