"""The clip-art world: vocabulary, held-out splits, and a deterministic scene generator."""

from pathlib import Path

import pytest

from captioner.world.clipart import (
    ACTIONS,
    OPENCLIPART,
    PEOPLE,
    DrawingCache,
    article,
    implied_actions,
    load_vocabulary,
    make_splits,
    plural,
    scenes,
)

needs_clipart = pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="Debian's openclipart-png is not installed (make sysdeps)")


def test_vocabulary_names_have_three_or_more_distinct_drawings() -> None:
    vocab = load_vocabulary()
    assert len(vocab) >= 60
    assert all(len(d) >= 3 for d in vocab.values())
    assert {"dog", "cat", "tree", "house", "man", "woman", "plane", "balloon"} <= set(vocab)
    # synonyms merged, authors and numbers gone, no Italian file names
    assert not {"airplane", "aircraft", "home", "baloon", "architetto"} & set(vocab)
    assert all(not any(c.isdigit() for c in n) for n in vocab)


@needs_clipart
def test_vocabulary_is_what_the_package_holds() -> None:
    import hashlib

    vocab = load_vocabulary()
    for name, drawings in vocab.items():
        hashes = [hashlib.sha256((OPENCLIPART / d).read_bytes()).hexdigest() for d in drawings]
        assert hashes == sorted(set(hashes)), name  # distinct drawings, ordered by content hash


def test_splits_hold_out_drawings_and_pairs() -> None:
    vocab = load_vocabulary()
    s = make_splits(vocab)
    for name, drawings in vocab.items():
        assert s.new_drawings.drawings[name] == drawings[-1:]
        assert drawings[-1] not in s.train.drawings[name]
    allowed_in_compositions = {p for p in s.new_compositions.excluded_pairs}
    assert not (allowed_in_compositions & s.train.excluded_pairs)
    assert len(s.train.excluded_pairs) > 100
    assert any(p & set(PEOPLE) for p in s.train.excluded_pairs)  # some actions are held out too


@needs_clipart
def test_generator_is_deterministic_and_respects_held_out_pairs(tmp_path: Path) -> None:
    s = make_splits(load_vocabulary())
    cache = DrawingCache(disk=tmp_path)
    a = list(scenes(s.train, 40, seed=3, cache=cache))
    b = list(scenes(s.train, 40, seed=3, cache=cache))
    assert [x[1] for x in a] == [y[1] for y in b]
    assert all(x[0].tobytes() == y[0].tobytes() for x, y in zip(a, b, strict=True))
    assert [x[1] for x in a] != [y[1] for y in scenes(s.train, 40, seed=4, cache=cache)]
    for img, scene in a:
        assert img.size == (224, 224)
        names = scene.names
        assert all(frozenset((p, q)) not in s.train.excluded_pairs for p in names for q in names if p != q)
        assert all(o.drawing in s.train.drawings[o.name] for o in scene.objects)
    kinds = {sc.kind for _, sc in scenes(s.train, 200, seed=5, cache=cache)}
    assert kinds == {"single", "count", "relation", "action", "triple"}


@needs_clipart
def test_captions_say_what_the_scene_shows(tmp_path: Path) -> None:
    s = make_splits(load_vocabulary())
    for _, sc in scenes(s.train, 60, seed=6, cache=DrawingCache(disk=tmp_path)):
        first = sc.captions[0]
        if sc.kind == "relation":
            a, rel, b = sc.relation or ("", "", "")
            box_a, box_b = sc.objects[0].box, sc.objects[1].box
            cx = lambda box: (box[0] + box[2]) / 2  # noqa: E731
            cy = lambda box: (box[1] + box[3]) / 2  # noqa: E731
            assert {
                "left": cx(box_a) < cx(box_b),
                "right": cx(box_a) > cx(box_b),
                "above": cy(box_a) < cy(box_b),
                "below": cy(box_a) > cy(box_b),
            }[rel]
            assert first.startswith(article(a)) and first.endswith(article(b))
        if sc.kind == "count":
            word = {2: "two", 3: "three"}[sc.count]
            assert first == f"{word} {plural(sc.objects[0].name)}"
            assert len(sc.objects) == sc.count


@needs_clipart
def test_relations_are_trained_in_reading_order_or_as_their_action(tmp_path: Path) -> None:
    s = make_splits(load_vocabulary())
    relations = [sc for _, sc in scenes(s.train, 120, seed=7, cache=DrawingCache(disk=tmp_path), kinds=["relation"])]
    said_as_action = 0
    for sc in relations:
        (target,) = sc.targets
        assert target in sc.captions  # a target is always one of the true phrasings
        a, rel, b = sc.relation or ("", "", "")
        if implied_actions(a, rel, b):
            said_as_action += 1
            assert target.split()[2] in {verb for verb, _ in ACTIONS.values()}
            continue
        box = {o.name: o.box for o in sc.objects}
        first, second = (w for w in target.split() if w in box)
        if "to the left of" in target:  # the first-named object is the one further left
            assert box[first][0] + box[first][2] < box[second][0] + box[second][2]
        else:
            assert " above " in f" {target} " and box[first][1] + box[first][3] < box[second][1] + box[second][3]
    assert said_as_action < len(relations) // 2
    others = [sc for _, sc in scenes(s.train, 40, seed=8, cache=DrawingCache(disk=tmp_path), kinds=["single", "count", "action"])]
    assert all(sc.targets == sc.captions for sc in others)


def test_plurals_and_articles() -> None:
    assert [plural(w) for w in ("dog", "man", "bus", "strawberry", "box", "sheep")] == [
        "dogs",
        "men",
        "buses",
        "strawberries",
        "boxes",
        "sheep",
    ]
    assert article("apple") == "an apple" and article("dog") == "a dog"
