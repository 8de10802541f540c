"""Real clip-art drawings (Debian's openclipart-png) and the seeded scene generator built on them.

No image-caption pairs ship anywhere we can reach, so the default captioner is trained on scenes
composed from real public-domain drawings, with ground-truth captions that say what is where,
how many, and in which relation ("a man walking a dog", not only "dog").

The object vocabulary (name -> distinct drawings) is built once by ``build_vocabulary`` from the
package's file names (authors, series, non-English names and synonyms handled as described there)
and committed as ``clipart_vocab.json`` beside this module, so every machine draws the same world; the word
lists that clean the names are data too (``words.json``).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

OPENCLIPART = Path("/usr/share/openclipart/png")
WORLD = Path(__file__).resolve().parent
VOCAB_FILE = WORLD / "clipart_vocab.json"
CANVAS = 224

WORDS = json.loads((WORLD / "words.json").read_text())  # the word lists as data, each with why it exists
EXCLUDED_DIRS = tuple(WORDS["excluded_dirs"]["words"])
STYLE_WORDS = frozenset(WORDS["style_words"]["words"])
NOT_OBJECTS = frozenset(WORDS["not_objects"]["words"])
SYNONYMS: dict[str, str] = WORDS["synonyms"]["map"]
ITALIAN_AUTHOR = re.compile(r"^archi")  # architetto_francesco_rollandin: Italian file names


def _name_of(path: Path, english: set[str]) -> str | None:
    tokens = [t for t in re.split(r"[_\s\-]+", path.stem.lower()) if t]
    if any(ITALIAN_AUTHOR.match(t) for t in tokens):
        return None
    words = [t for t in tokens if t.isalpha() and len(t) >= 3 and t not in STYLE_WORDS]
    if not words:
        return None
    name = words[0]  # authors and numbers trail the object words: "lightbulb_jon_phillips_01"
    if name not in english and name.endswith("s") and name[:-1] in english:
        name = name[:-1]
    if name not in english:
        return None
    name = SYNONYMS.get(name, name)
    return None if name in NOT_OBJECTS else name


def build_vocabulary(
    root: Path = OPENCLIPART, dictionary: Path = Path("/usr/share/dict/american-english"), min_drawings: int = 3
) -> dict[str, list[str]]:
    """name -> distinct drawings (paths relative to ``root``, sorted by content hash) for names with ``min_drawings``+."""
    english = {w.strip() for w in dictionary.read_text().splitlines() if w.strip().isalpha() and w.strip().islower()}
    by_name: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(root.rglob("*.png")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or rel.startswith(EXCLUDED_DIRS):
            continue
        name = _name_of(path, english)
        if name is None:
            continue
        if name.endswith("s") and name[:-1] in by_name:  # plural of a name already seen
            name = name[:-1]
        by_name[name].setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), rel)
    return {n: [d[h] for h in sorted(d)] for n, d in sorted(by_name.items()) if len(d) >= min_drawings}


def load_vocabulary() -> dict[str, list[str]]:
    return dict(json.loads(VOCAB_FILE.read_text())["names"])


def plural(name: str) -> str:
    if name in ("man", "woman", "fireman"):
        return name[:-2] + "en"
    if name in ("sheep", "fish", "corn", "bacon", "milk", "juice", "coffee", "bread", "candy"):
        return name
    if name.endswith(("s", "sh", "ch", "x")):
        return name + "es"
    if name.endswith("y") and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


# ---- drawings ----------------------------------------------------------------------------------


class DrawingCache:
    """Drawings cropped to their content and shrunk to at most 256 px, kept in memory and on disk:
    a few sources are 21k x 30k pixels and take seconds to decode, so each is decoded once per machine."""

    def __init__(self, root: Path = OPENCLIPART, max_side: int = 256, disk: Path | None = None) -> None:
        self.root, self.max_side = root, max_side
        self.disk = disk or Path.home() / ".cache" / "mmfeat" / f"clipart-{max_side}"
        self._cache: dict[str, Image.Image] = {}

    def get(self, rel: str) -> Image.Image:
        if rel not in self._cache:
            cached = self.disk / (hashlib.sha256(rel.encode()).hexdigest()[:24] + ".png")
            if cached.exists():
                with Image.open(cached) as img:
                    self._cache[rel] = img.convert("RGBA")
                return self._cache[rel]
            limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # a trusted local file, shrunk right after decoding
            try:
                with Image.open(self.root / rel) as img:
                    rgba = img.convert("RGBA")
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            rgba = rgba.crop(rgba.getchannel("A").getbbox() or (0, 0, rgba.width, rgba.height))
            rgba.thumbnail((self.max_side, self.max_side))
            self.disk.mkdir(parents=True, exist_ok=True)
            rgba.save(cached)
            self._cache[rel] = rgba
        return self._cache[rel]


class BlankDrawings(DrawingCache):
    """Stands in for the drawings when only the captions are wanted (the tokenizer corpus): the
    generator draws the same names, relations and phrasings for a seed, with no image I/O."""

    def get(self, rel: str) -> Image.Image:
        return Image.new("RGBA", (1, 1))


# ---- scenes ------------------------------------------------------------------------------------

RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
# High-order context: who does what with what, when the two stand in the given arrangement.
PEOPLE = ("man", "woman", "boy", "baby", "fireman")
ACTIONS: dict[str, tuple[str, str]] = {  # object -> (verb phrase, arrangement of person relative to object)
    "dog": ("walking", "left"), "horse": ("riding", "above"), "guitar": ("playing", "left"), "violin": ("playing", "left"),
    "cello": ("playing", "left"), "trumpet": ("playing", "left"), "piano": ("playing", "left"), "book": ("reading", "above"),
    "balloon": ("holding", "below"), "apple": ("eating", "left"), "pizza": ("eating", "left"), "banana": ("eating", "left"),
    "bicycle": ("riding", "above"), "phone": ("holding", "left"), "hat": ("wearing", "below"), "ball": ("kicking", "left"),
}  # fmt: skip


def implied_actions(a: str, rel: str, b: str) -> list[tuple[str, str, str]]:
    """(person, verb, thing) for a person and a thing standing as the action is drawn ("a man
    to the left of a dog" is also "a man walking a dog")."""
    return [
        (person, ACTIONS[thing][0], thing)
        for person, thing, where in ((a, b, rel), (b, a, INVERSE[rel]))
        if person in PEOPLE and thing in ACTIONS and ACTIONS[thing][1] == where
    ]


def relation_statements(a: str, rel: str, b: str) -> list[str]:
    """Every true statement (articles left out) of "a stands ``rel`` of b", implied actions included."""
    out = [f"{a} {RELATIONS[rel]} {b}", f"{b} {RELATIONS[INVERSE[rel]]} {a}"]
    if rel in ("left", "right"):
        out += [f"{a} next to {b}", f"{b} next to {a}"]
    return out + [" ".join(action) for action in implied_actions(a, rel, b)]


@dataclass(frozen=True)
class Placed:
    name: str
    drawing: str
    box: tuple[int, int, int, int]  # left, top, right, bottom on the canvas
    size: str  # "small" | "large" | ""


@dataclass(frozen=True)
class Scene:
    kind: str  # single | count | relation | action | triple
    objects: tuple[Placed, ...]
    captions: tuple[str, ...]  # every phrasing that is true of the scene (the references)
    relation: tuple[str, str, str] | None = None  # (a, rel, b) with rel in RELATIONS, or (person, verb, object)
    count: int = 1

    @property
    def names(self) -> list[str]:
        return sorted({o.name for o in self.objects})

    @property
    def targets(self) -> tuple[str, ...]:
        """The phrasings the captioner is trained to say: every caption, except that a relation is
        said as the action it implies or else in reading order (the object on the left or on top
        first). With either order allowed, the model must find where the object it has just named
        is; it never learnt that (relations at chance, training scenes included). In reading order
        the first name is "what is on the left or on top", and the relation word follows from the axis."""
        if self.kind != "relation" or self.relation is None:
            return self.captions
        a, rel, b = self.relation
        if actions := implied_actions(a, rel, b):
            return tuple(f"{article(p)} {verb} {article(t)}" for p, verb, t in actions)
        first, second = (a, b) if rel in ("left", "above") else (b, a)
        return (f"{article(first)} {RELATIONS[rel if rel in ('left', 'above') else INVERSE[rel]]} {article(second)}",)


@dataclass
class SceneSpec:
    """What the generator may use: names with their drawings, and name pairs it must not combine."""

    drawings: dict[str, list[str]]
    excluded_pairs: frozenset[frozenset[str]] = field(default_factory=frozenset)


def _paste(canvas: Image.Image, img: Image.Image, flip: bool, center: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    img = ImageOps.mirror(img) if flip else img.copy()  # a mirrored drawing is the same object: free variety
    img.thumbnail((side, side))
    left, top = center[0] - img.width // 2, center[1] - img.height // 2
    canvas.paste(img, (left, top), img)
    return (left, top, left + img.width, top + img.height)


def _pick(rng: random.Random, spec: SceneSpec, k: int, allow: set[str] | None = None) -> list[str]:
    names = sorted(allow or spec.drawings)
    for _ in range(100):
        chosen = rng.sample(names, k)
        if all(frozenset(p) not in spec.excluded_pairs for p in _pairs(chosen)):
            return chosen
    raise ValueError("cannot pick names outside the excluded pairs")


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def render_scene(rng: random.Random, spec: SceneSpec, cache: DrawingCache, kind: str | None = None) -> tuple[Image.Image, Scene]:
    """One scene and its true captions. ``kind`` forces a kind; otherwise it is drawn at random."""
    canvas = Image.new("RGB", (CANVAS, CANVAS), "white")
    jitter = lambda: rng.randint(-8, 8)  # noqa: E731
    kind = kind or rng.choices(["single", "count", "relation", "action", "triple"], [0.25, 0.15, 0.35, 0.15, 0.10])[0]
    if kind == "action":
        doers = [p for p in PEOPLE if p in spec.drawings]
        things = [o for o in ACTIONS if o in spec.drawings]
        pairs = [(p, o) for p in doers for o in things if frozenset((p, o)) not in spec.excluded_pairs]
        if not pairs:
            kind = "relation"
    if kind == "single":
        (name,) = _pick(rng, spec, 1)
        size = rng.choice(["small", "large", ""])
        side = {"small": 70, "large": 180, "": 130}[size]
        d = rng.choice(spec.drawings[name])
        box = _paste(canvas, cache.get(d), rng.random() < 0.5, (112 + jitter(), 112 + jitter()), side)
        obj = Placed(name, d, box, size)
        np_ = f"{size} {name}".strip()
        caps: tuple[str, ...] = (article(np_), f"a drawing of {article(np_)}", f"{article(np_)} on a white background")
        return canvas, Scene("single", (obj,), caps)
    if kind == "count":
        (name,) = _pick(rng, spec, 1)
        n = rng.choice([2, 3])
        objs = []
        for i in range(n):
            d = rng.choice(spec.drawings[name])
            cx = int((i + 0.5) * CANVAS / n) + jitter()
            objs.append(Placed(name, d, _paste(canvas, cache.get(d), rng.random() < 0.5, (cx, 112 + jitter()), int(200 / n)), ""))
        word = {2: "two", 3: "three"}[n]
        count_caps = (f"{word} {plural(name)}", f"a drawing of {word} {plural(name)}", f"{word} {plural(name)} side by side")
        return canvas, Scene("count", tuple(objs), count_caps, count=n)
    if kind == "action":
        person, thing = rng.choice(pairs)
        verb, where = ACTIONS[thing]
        centers = {"left": ((60, 112), (164, 112)), "above": ((112, 60), (112, 164)), "below": ((112, 164), (112, 60))}[where]
        objs = []
        for name, c in zip((person, thing), centers, strict=True):
            d = rng.choice(spec.drawings[name])
            objs.append(Placed(name, d, _paste(canvas, cache.get(d), rng.random() < 0.5, (c[0] + jitter(), c[1] + jitter()), 100), ""))
        act_caps = (f"{article(person)} {verb} {article(thing)}", f"a drawing of {article(person)} {verb} {article(thing)}")
        return canvas, Scene("action", tuple(objs), act_caps, relation=(person, verb, thing))
    if kind == "triple":
        names = _pick(rng, spec, 3)
        objs = []
        for i, name in enumerate(names):
            d = rng.choice(spec.drawings[name])
            objs.append(
                Placed(
                    name,
                    d,
                    _paste(canvas, cache.get(d), rng.random() < 0.5, (int((i + 0.5) * CANVAS / 3) + jitter(), 112 + jitter()), 70),
                    "",
                )
            )
        x, y, z = (article(n) for n in names)
        return canvas, Scene("triple", tuple(objs), (f"{x}, {y} and {z}", f"a drawing of {x}, {y} and {z}"))
    first, second = _pick(rng, spec, 2)
    rel = rng.choice(list(RELATIONS))
    places = {
        "left": ((60, 112), (164, 112)),
        "right": ((164, 112), (60, 112)),
        "above": ((112, 60), (112, 164)),
        "below": ((112, 164), (112, 60)),
    }[rel]
    objs = []
    for name, c in zip((first, second), places, strict=True):
        d = rng.choice(spec.drawings[name])
        objs.append(Placed(name, d, _paste(canvas, cache.get(d), rng.random() < 0.5, (c[0] + jitter(), c[1] + jitter()), 95), ""))
    rel_caps = [f"{article(first)} {RELATIONS[rel]} {article(second)}", f"{article(second)} {RELATIONS[INVERSE[rel]]} {article(first)}"]
    if rel in ("left", "right"):
        rel_caps.append(f"{article(first)} next to {article(second)}")
    rel_caps += [f"{article(person)} {verb} {article(thing)}" for person, verb, thing in implied_actions(first, rel, second)]
    return canvas, Scene("relation", tuple(objs), tuple(rel_caps), relation=(first, rel, second))


@dataclass(frozen=True)
class Splits:
    """Training drawings and pairs, and the two held-out worlds."""

    train: SceneSpec
    new_drawings: SceneSpec  # whole drawings never seen in training, of known names
    new_compositions: SceneSpec  # name pairs never combined in training, from training drawings


def make_splits(vocab: dict[str, list[str]], seed: int = 0, heldout_pair_share: float = 0.15) -> Splits:
    rng = random.Random(seed)
    train_drawings = {n: d[:-1] for n, d in vocab.items()}  # the last drawing (by content hash) of every name is held out
    heldout = {n: d[-1:] for n, d in vocab.items()}
    names = sorted(vocab)
    pairs = [frozenset(p) for p in _pairs(names)]
    # the held-out pairs include people with the things they act on, so actions are tested too
    action_pairs = [frozenset((p, o)) for p in PEOPLE for o in ACTIONS if p in vocab and o in vocab]
    chosen = set(rng.sample(pairs, int(len(pairs) * heldout_pair_share))) | set(rng.sample(action_pairs, len(action_pairs) // 4))
    return Splits(
        train=SceneSpec(train_drawings, frozenset(chosen)),
        new_drawings=SceneSpec(heldout),
        new_compositions=SceneSpec(train_drawings, frozenset(set(pairs) - chosen)),
    )


def scenes(
    spec: SceneSpec, n: int, seed: int, cache: DrawingCache | None = None, kinds: list[str] | None = None
) -> Iterator[tuple[Image.Image, Scene]]:
    """``n`` scenes, the same ones for the same seed and spec."""
    cache = cache or DrawingCache()
    rng = random.Random(seed)
    for i in range(n):
        yield render_scene(rng, spec, cache, kinds[i % len(kinds)] if kinds else None)


def caption_corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Every true phrasing of ``n`` training scenes: the caption language the captioner speaks."""
    train = make_splits(load_vocabulary()).train
    for _, scene in scenes(train, n, seed, BlankDrawings()):
        yield from scene.captions


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
