"""Captioner processing: media bytes to model inputs and ids to words (no model weights here).

- images: the image media kind's safe decode (mmfeat/media/image.py), no larger than the model needs,
  letterboxed into the model's square and normalized the EfficientNet-Lite way;
- words: the default captioner's word-level vocabulary (captions are normalized text).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from captioner.modeling.encoder import EfficientNetLite0

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
IMAGE_SIZE = 224


class WordVocab:
    """The decoder's word-level vocabulary (captions are normalized text)."""

    def __init__(self, words: list[str]) -> None:
        self.words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.ids = {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str) -> list[int]:
        return [BOS] + [self.ids.get(w, UNK) for w in text.split()] + [EOS]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids if i >= len(SPECIALS))


def decode_image(data: bytes, max_pixels: int, image_size: int) -> Any:
    """Encoded image bytes -> the RGB image a model of ``image_size`` captions (the one decoding path).

    Decoded no larger than twice the model's input: resizing a 1024-px image costs more than the tiny
    model's whole forward pass, and it cannot be batched."""
    from mmfeat.media.image import decode_rgb

    return decode_rgb(data, max_pixels, max_side=max(2 * image_size, 128))


def letterbox(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Fit an RGB image into a white size x size square, aspect ratio kept (scenes are drawn that way)."""
    img = img.copy()
    img.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(letterbox(im.convert("RGB")), dtype=np.uint8) for im in images])
    return EfficientNetLite0.normalize(torch.from_numpy(arr).permute(0, 3, 1, 2))
