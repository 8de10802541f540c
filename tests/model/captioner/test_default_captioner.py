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


def test_the_content_embedding_and_its_semantic_ids_carry_what_the_scene_shows() -> None:
    """Scenes that share an object are closer in the embedding than scenes that share none, and items that share a
    first-level semantic-ID code share objects more often than random pairs do."""
    import numpy as np

    from mmfeat.settings import ASSETS
    from mmfeat.tokenizers.semantic import load_codebook

    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    held = held_out_sets(64, seed=5)[0]
    vectors = np.stack([c.embedding_array() for c in runtime.caption(held.images, [""] * len(held.images))])
    cos = vectors @ vectors.T
    shares = np.array([[bool(set(a.names) & set(b.names)) for b in held.scenes] for a in held.scenes])
    upper = np.triu(np.ones_like(shares), k=1).astype(bool)
    # measured on this set: mean cosine 0.62 for pairs sharing an object, 0.23 for the others
    assert cos[shares & upper].mean() > cos[~shares & upper].mean() + 0.2
    codes = load_codebook(ASSETS / "tokenizers").encode(vectors)
    same_code = codes[:, :1] == codes[:, 0][None, :]
    assert (same_code & upper).sum() >= 10  # enough pairs to compare
    # measured: 94% of the 117 same-code pairs share an object, against 11% of all pairs
    assert shares[same_code & upper].mean() > 3 * shares[upper].mean()
