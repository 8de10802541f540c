"""The OCR model as Triton serves it (readers/ocr.py), on real RapidOCR weights and text rendered here."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from captioner.world.signs import signs
from mmfeat.errors import MediaRejected
from readers.ocr import OcrRuntime, reading_order


@pytest.fixture(scope="module")
def ocr() -> OcrRuntime:
    return OcrRuntime()


def test_rendered_words_are_read_back(ocr: OcrRuntime) -> None:
    found = total = 0
    for sign in signs(6, seed=3):
        read = ocr.read(sign.png).lower().split()
        found += sum(w in read for w in sign.words)
        total += len(sign.words)
    assert found / total >= 0.8, f"{found}/{total} words read"  # a sanity floor; the figure is `mmfeat eval-media`'s
    assert ocr.version.startswith("rapidocr-3.") and "@" in ocr.version


def test_a_picture_without_text_reads_empty_and_a_bomb_is_refused(ocr: OcrRuntime) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 120, 200)).save(buf, "PNG")
    assert ocr.read(buf.getvalue()) == ""
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    with pytest.raises(MediaRejected):
        ocr.read(bomb.getvalue())


def test_lines_are_read_top_to_bottom_and_left_to_right() -> None:
    import numpy as np

    def box(x: float, y: float) -> list[list[float]]:
        return [[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]]

    boxes = np.array([box(200, 103), box(10, 100), box(10, 10), box(120, 12)])
    assert reading_order(boxes, ["dd", "cc", "aa", "bb"], [0.9, 0.9, 0.9, 0.3], 0.5) == ["aa", "cc dd"]  # bb: below min score
    assert reading_order(boxes, ["dd", "3", "aa", "bb"], [0.9] * 4, 0.5) == ["aa bb", "dd"]  # "3": one character, texture
