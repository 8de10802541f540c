"""On-screen text: RapidOCR (PP-OCRv6 detection and recognition, ONNX, on onnxruntime), as Triton serves it.

The wheel ships its models, so nothing is downloaded. Lines come out in reading order (top to bottom, then
left to right within a line), each line kept when the recognizer's score reaches ``min_score``. The media
bytes are decoded by the image kind's own safe decoder (a bomb or a corrupt image is that request's error),
downscaled to ``max_side`` first: detection cost grows with the pixel count and text that small is no signal.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfeat.media.image import decode_rgb

log = logging.getLogger("mmfeat.ocr")


@dataclass(frozen=True)
class OcrSettings:
    min_score: float = 0.5
    max_side: int = 1280
    max_pixels: int = 40_000_000
    threads: int = 0  # onnxruntime's intra-op threads (0: its default)


def _models_dir() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models"


class OcrRuntime:
    """Image bytes -> the text on them, one string (lines joined by newlines)."""

    def __init__(self, settings: OcrSettings | None = None) -> None:
        from rapidocr import RapidOCR

        self.s = settings or OcrSettings()
        params: dict[str, Any] = {"Global.log_level": "error", "Global.text_score": self.s.min_score}
        if self.s.threads > 0:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.s.threads
        self.engine = RapidOCR(params=params)
        digest = hashlib.sha256()
        for path in sorted(_models_dir().glob("*.onnx")):
            digest.update(path.name.encode() + path.read_bytes())
        self.version = f"rapidocr-{importlib.metadata.version('rapidocr')}-ppocrv6@{digest.hexdigest()[:8]}"

    def read(self, media: bytes) -> str:
        img = decode_rgb(media, self.s.max_pixels, max_side=self.s.max_side)
        out = self.engine(np.asarray(img))
        boxes, txts, scores = getattr(out, "boxes", None), getattr(out, "txts", None), getattr(out, "scores", None)
        if boxes is None or txts is None or scores is None:
            return ""
        return "\n".join(reading_order(np.asarray(boxes, dtype=np.float64), list(txts), list(scores), self.s.min_score))


def reading_order(boxes: np.ndarray, texts: list[str], scores: list[float], min_score: float) -> list[str]:
    """Lines of text top to bottom; boxes whose vertical centres are within half a line height are one line,
    read left to right. Boxes under ``min_score``, or with fewer than two letters or digits, are dropped."""
    # a line needs two letters or digits: a lone mark read off a drawing ("3", "a") is texture, not text
    keep = [i for i, (t, s) in enumerate(zip(texts, scores, strict=True)) if s >= min_score and sum(c.isalnum() for c in t) >= 2]
    if not keep:
        return []
    tops, bottoms = boxes[keep, :, 1].min(axis=1), boxes[keep, :, 1].max(axis=1)
    centres, lefts = (tops + bottoms) / 2, boxes[keep, :, 0].min(axis=1)
    height = float(np.median(bottoms - tops)) or 1.0
    order = sorted(range(len(keep)), key=lambda k: (centres[k], lefts[k]))
    lines: list[list[int]] = []
    for k in order:
        if lines and abs(centres[k] - np.mean([centres[j] for j in lines[-1]])) <= height / 2:
            lines[-1].append(k)
        else:
            lines.append([k])
    return [" ".join(texts[keep[k]].strip() for k in sorted(line, key=lambda j: lefts[j])) for line in lines]
