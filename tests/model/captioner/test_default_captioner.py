"""The committed default captioner passes a quality check on a small fixed held-out set."""

from pathlib import Path

import pytest

from captioner.configuration import read_manifest
from captioner.evaluation.quality import held_out_sets, score
from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import OPENCLIPART, load_vocabulary
from mmfeat.settings import DEFAULT_CAPTIONER

pytestmark = pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="Debian's openclipart-png is not installed (make sysdeps)")


def test_default_captioner_is_trained_and_right_on_held_out_scenes() -> None:
    manifest = read_manifest(DEFAULT_CAPTIONER)
    assert manifest.trained and manifest.kind == "lite0-qformer-llama"
    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    names = sorted(load_vocabulary())
    results = {}
    for held in held_out_sets(48, seed=99):
        captions = [c.text for c in runtime.caption(held.images, [""] * len(held.images))]
        results[held.name] = score(captions, held.scenes, names)
    compositions, drawings = results["new_compositions"], results["new_drawings"]
    # Measured on this fixed set: recall 0.98 and relations 0.94 on new compositions, recall 0.61 on
    # new drawings. The floors leave room for other CPUs' float rounding; the issue's goals (0.9,
    # 0.8, 0.6) and the full benchmark's figures are in README.md.
    assert compositions["object_recall"] >= 0.9, results
    assert compositions["relation_accuracy"] >= 0.85, results
    assert drawings["object_recall"] >= 0.55, results
    assert compositions["bleu4"] >= 0.75 and drawings["bleu4"] >= 0.6, results


def test_eval_captioner_quick_writes_figures_above_every_baseline(tmp_path: Path) -> None:
    import json

    from captioner.evaluation.quality import evaluate

    results = evaluate(DEFAULT_CAPTIONER, tmp_path, quick=True)
    saved = json.loads((tmp_path / "caption_quality.json").read_text())
    assert saved["model"] == read_manifest(DEFAULT_CAPTIONER).version
    assert (tmp_path / "caption_examples.png").stat().st_size > 10_000
    for set_name, systems in results["sets"].items():
        assert set(systems) == {"trained", "untrained", "nearest_neighbour", "imagenet_template"}
        for baseline in ("untrained", "nearest_neighbour", "imagenet_template"):
            for metric in ("object_recall", "bleu4"):
                assert systems["trained"][metric] > systems[baseline][metric], (set_name, baseline, metric)
