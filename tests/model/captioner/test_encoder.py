"""The pretrained EfficientNet-Lite0 image encoder: strict load, token shapes, and real ImageNet answers."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from captioner.modeling.encoder import EfficientNetLite0, load_pretrained


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0:
    return load_pretrained()


def batch(*images: np.ndarray) -> torch.Tensor:
    resized = [np.asarray(Image.fromarray(im).convert("RGB").resize((224, 224), Image.BICUBIC)) for im in images]
    return EfficientNetLite0.normalize(torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2))


def test_weights_load_strictly_and_every_parameter_is_used(encoder: EfficientNetLite0) -> None:
    from captioner.modeling.encoder import weights_file

    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    assert set(state) == set(encoder.state_dict())  # strict=True already enforced it; say it plainly
    assert len(encoder._blocks) == 16


def test_tokens_are_49_by_1280(encoder: EfficientNetLite0) -> None:
    with torch.no_grad():
        tokens = encoder.tokens(batch(data.chelsea(), data.coffee()))
    assert tokens.shape == (2, 49, 1280)
    assert torch.isfinite(tokens).all() and (tokens >= 0).all() and (tokens <= 6).all()  # ReLU6 range


def test_imagenet_answers_on_real_photos(encoder: EfficientNetLite0) -> None:
    """Chelsea is a cat (ImageNet 281-285), the coffee photo an espresso or a cup (967, 968, 504)."""
    with torch.no_grad():
        probs = encoder(batch(data.chelsea(), data.coffee())).softmax(-1)
    assert int(probs[0].argmax()) in range(281, 286) and float(probs[0, 281:286].sum()) > 0.8
    assert int(probs[1].argmax()) in (967, 968, 504)
