"""A seeded corpus of scene captions, for training tokenizer A and the untrained captioner's vocabulary.

No image-caption pairs ship anywhere we can reach, so the corpus is generated from object words
(the kind of names openclipart drawings carry), attributes, counts and relations, phrased several
ways, including the high-order context the paper cares about ("a man walking a dog").
"""

from __future__ import annotations

import random
from collections.abc import Iterator

OBJECTS = (
    "apple",
    "banana",
    "bird",
    "boat",
    "book",
    "bottle",
    "bus",
    "butterfly",
    "cake",
    "camera",
    "car",
    "castle",
    "cat",
    "chair",
    "clock",
    "cloud",
    "computer",
    "cow",
    "cup",
    "dog",
    "dolphin",
    "door",
    "dragon",
    "drum",
    "duck",
    "elephant",
    "fish",
    "flag",
    "flower",
    "fox",
    "frog",
    "giraffe",
    "guitar",
    "hammer",
    "hat",
    "helicopter",
    "horse",
    "house",
    "key",
    "kite",
    "lamp",
    "leaf",
    "lion",
    "man",
    "moon",
    "mouse",
    "mushroom",
    "owl",
    "pencil",
    "penguin",
    "piano",
    "pig",
    "plane",
    "rabbit",
    "robot",
    "rocket",
    "rose",
    "sheep",
    "ship",
    "shoe",
    "snake",
    "snowman",
    "star",
    "sun",
    "sword",
    "table",
    "teapot",
    "telephone",
    "tiger",
    "train",
    "tree",
    "truck",
    "turtle",
    "umbrella",
    "violin",
    "whale",
    "woman",
    "bicycle",
    "girl",
    "boy",
    "baby",
    "king",
    "queen",
    "wizard",
    "pirate",
    "knight",
    "angel",
    "heart",
    "crown",
    "candle",
    "bell",
    "globe",
    "map",
    "anchor",
    "balloon",
    "pumpkin",
    "cactus",
    "mountain",
    "bridge",
    "tower",
    "church",
    "lighthouse",
    "tent",
    "bench",
    "ladder",
)
ATTRIBUTES = (
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "orange",
    "purple",
    "pink",
    "brown",
    "small",
    "large",
    "tiny",
    "big",
    "old",
    "happy",
    "smiling",
    "cute",
    "wooden",
    "golden",
    "striped",
    "spotted",
    "cartoon",
    "simple",
    "colorful",
)
RELATIONS = ("next to", "on top of", "under", "behind", "in front of", "beside", "above", "below", "near")
ACTIONS = (
    ("man", "walking", "dog"),
    ("woman", "holding", "umbrella"),
    ("girl", "riding", "horse"),
    ("boy", "flying", "kite"),
    ("cat", "chasing", "mouse"),
    ("pirate", "sailing", "ship"),
    ("knight", "fighting", "dragon"),
    ("man", "playing", "guitar"),
    ("woman", "reading", "book"),
    ("bird", "sitting on", "tree"),
    ("dog", "chasing", "ball"),
    ("child", "eating", "apple"),
    ("king", "wearing", "crown"),
    ("wizard", "holding", "candle"),
)
COUNTS = ("two", "three", "four")
FRAMES = ("{s}", "a drawing of {s}", "a picture of {s}", "clip art of {s}", "an illustration of {s}", "{s} on a white background")


def _np(rng: random.Random, obj: str) -> str:
    if rng.random() < 0.5:
        obj = f"{rng.choice(ATTRIBUTES)} {obj}"
    return f"an {obj}" if obj[0] in "aeiou" else f"a {obj}"


def _plural(word: str) -> str:
    if word in ("man", "woman"):
        return word[:-2] + "en"
    if word in ("sheep", "fish"):
        return word
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def scene_caption(rng: random.Random) -> str:
    """One caption of a one- to three-object scene, in one of several phrasings."""
    kind = rng.random()
    if kind < 0.25:
        s = _np(rng, rng.choice(OBJECTS))
    elif kind < 0.45:
        s = f"{rng.choice(COUNTS)} {_plural(rng.choice(OBJECTS))}"
    elif kind < 0.7:
        a, b = rng.sample(OBJECTS, 2)
        s = f"{_np(rng, a)} {rng.choice(RELATIONS)} {_np(rng, b)}"
    elif kind < 0.85:
        who, verb, what = rng.choice(ACTIONS)
        s = f"a {who} {verb} a {what}"
    else:
        a, b, c = rng.sample(OBJECTS, 3)
        s = f"{_np(rng, a)}, {_np(rng, b)} and {_np(rng, c)}"
    return rng.choice(FRAMES).format(s=s)


def caption_corpus(n: int, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield scene_caption(rng)
