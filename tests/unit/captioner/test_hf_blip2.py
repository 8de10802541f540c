"""The untrained captioner directory: real BLIP-2 architecture, batched and deterministic."""

from pathlib import Path

import pytest
from PIL import Image

from captioner.configuration import read_manifest
from captioner.modeling.hf_blip2 import make_untrained_captioner
from captioner.runtime import CaptionerRuntime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> CaptionerRuntime:
    d = tmp_path_factory.mktemp("captioner")
    make_untrained_captioner(d)
    return CaptionerRuntime(d)


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64 + 7 * i, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)) for i in range(n)]


def test_manifest_is_labelled_untrained_and_reproducible(tmp_path: Path, runtime: CaptionerRuntime) -> None:
    m = make_untrained_captioner(tmp_path)
    assert m.trained is False and m.version.startswith("untrained-tiny@")
    assert read_manifest(tmp_path) == m == runtime.manifest  # same seed, same weights, same version
    assert type(runtime.engine.model).__name__ == "Blip2ForConditionalGeneration"
    assert runtime.engine.model.config.text_config.model_type == "llama"


def test_one_batched_generate_is_deterministic_and_batch_invariant(runtime: CaptionerRuntime) -> None:
    imgs = images(6)
    batch = runtime.caption(imgs, [""] * 6)
    assert len(batch) == 6
    for cap in batch:
        assert 0 < len(cap.token_ids) <= runtime.manifest.max_new_tokens
        assert cap.text
    singles = [runtime.caption([img], [""])[0] for img in imgs]
    assert singles == batch
    # the Q-Former's pooled output rides along (a forward hook in the same generate): unit norm, its width
    import numpy as np

    width = runtime.engine.model.config.qformer_config.hidden_size
    assert all(len(c.embedding_array()) == width and abs(np.linalg.norm(c.embedding_array()) - 1) < 1e-2 for c in batch)
    assert len({c.embedding for c in batch}) == 6
