"""The words around an item in the simulated world: what its owner wrote, the sign on it, what is said in it.

Each item has a hidden topic its picture does not show (a clip-art scene says nothing of "cooking" or
"football"); users like topics as they like objects, so the ground truth rewards matching one. The topic
leaks, noisily, into three sources the worker reads: the post's text names it with probability
``post_signal`` (otherwise it is filler, or now and then another topic), a share of items carry a banner
with the topic word that the real OCR model must read off the picture, and a share carry speech about it
(espeak-ng) that the real ASR model must transcribe.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFont

TOPICS = ("cooking", "travel", "football", "music", "pets", "garden", "fashion", "science", "comedy", "fitness", "painting", "games")
FILLER = ("new", "today", "look", "my", "weekend", "fun", "check", "this", "out", "love", "best", "day", "again", "first")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def post_text(rng: random.Random, topic: str, signal: float) -> str:
    """A title-and-hashtags post: names ``topic`` with probability ``signal``, else filler, or one time in five
    another topic (an owner's off-topic tag)."""
    words = rng.sample(FILLER, rng.randint(2, 4))
    draw = rng.random()
    if draw < signal:
        tag = topic
    elif draw < signal + (1 - signal) / 5:
        tag = rng.choice([t for t in TOPICS if t != topic])
    else:
        return " ".join(words)
    return f"{' '.join(words)} #{tag}" if rng.random() < 0.5 else f"{tag} {' '.join(words)}"


def with_banner(img: Image.Image, word: str) -> Image.Image:
    """The picture with a banner naming ``word`` along its bottom, as an editor's on-screen title."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    h = max(28, out.height // 6)
    draw.rectangle((0, out.height - h, out.width, out.height), fill=(20, 20, 20))
    font = ImageFont.truetype(FONT, int(h * 0.7))
    box = draw.textbbox((0, 0), word.upper(), font=font)
    draw.text(((out.width - (box[2] - box[0])) // 2, out.height - h + (h - (box[3] - box[1])) // 2 - box[1]), word.upper(),
              font=font, fill=(255, 255, 255))  # fmt: skip
    return out


def spoken_sentence(rng: random.Random, topic: str) -> str:
    return f"{rng.choice(('today we talk about', 'this is my', 'welcome to', 'a little'))} {topic}"
