"""Images with known text on them, made offline: words in a Debian font (DejaVu), in several sizes,
colours and rotations, on white or over a clip-art scene (as a caption burnt into a video frame would be).
The OCR model's tests and its word-accuracy figure use them."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
FACES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")
WORDS = (
    "open", "sunday", "sale", "fresh", "bread", "coffee", "market", "today", "free", "music", "garden", "pizza",
    "summer", "winter", "family", "happy", "river", "school", "travel", "beach", "dinner", "morning", "night", "city",
    "dog", "cat", "horse", "apple", "flower", "house", "train", "bike", "ticket", "party", "friends", "sport",
)  # fmt: skip
COLOURS = (((0, 0, 0), (255, 255, 255)), ((255, 255, 255), (20, 20, 60)), ((200, 0, 0), (255, 250, 230)), ((0, 0, 160), (230, 240, 255)))


@dataclass(frozen=True)
class Sign:
    png: bytes
    words: list[str]  # in reading order
    size: int
    rotation: float


def signs(n: int, seed: int = 0, backdrop: Image.Image | None = None) -> Iterator[Sign]:
    """``n`` images of 1 to 3 lines of 1 to 3 known words each, seeded."""
    rng = random.Random(seed)
    for _ in range(n):
        lines = [[rng.choice(WORDS) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 3))]
        size, rotation = rng.choice((24, 32, 48, 64)), rng.choice((0.0, 0.0, -5.0, 5.0, -15.0, 15.0))
        fg, bg = rng.choice(COLOURS)
        font = ImageFont.truetype(str(FONTS / rng.choice(FACES)), size)
        text = "\n".join(" ".join(w.upper() if rng.random() < 0.5 else w for w in line) for line in lines)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        box = probe.multiline_textbbox((0, 0), text, font=font, spacing=size // 3)
        w, h = int(box[2]) + size, int(box[3]) + size
        layer = Image.new("RGBA", (w, h), (*bg, 255 if backdrop is None else 200))
        ImageDraw.Draw(layer).multiline_text((size // 2, size // 2), text, font=font, fill=(*fg, 255), spacing=size // 3)
        layer = layer.rotate(rotation, expand=True, fillcolor=(*bg, 0 if backdrop is not None else 255), resample=Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (max(480, layer.width + 40), max(200, layer.height + 40)), bg if backdrop is None else "white")
        if backdrop is not None:
            canvas.paste(backdrop.convert("RGB").resize(canvas.size))
        canvas.paste(layer, ((canvas.width - layer.width) // 2, (canvas.height - layer.height) // 2), layer)
        buf = io.BytesIO()
        canvas.save(buf, "PNG")
        yield Sign(buf.getvalue(), [w for line in lines for w in line], size, rotation)
