"""Caption metrics against hand-computed values."""

import math

import pytest

from captioner.evaluation.quality import bleu4, count_ok, mentioned, relation_ok
from captioner.world.clipart import Placed, Scene


def scene(kind: str, names: list[str], relation: tuple[str, str, str] | None = None, count: int = 1) -> Scene:
    objs = tuple(Placed(n, f"{n}.png", (0, 0, 1, 1), "") for n in names)
    return Scene(kind, objs, ("x",), relation=relation, count=count)


def test_bleu4_hand_computed() -> None:
    assert bleu4(["a dog to the left of a cat"], [["a dog to the left of a cat"]]) == pytest.approx(1.0)
    # hyp "a dog next to a cat" vs ref "a dog next to a tree" (6 words each): clipped 1-grams 5/6,
    # 2-grams 4/5, 3-grams 3/4, 4-grams 2/3, equal lengths so no brevity penalty -> (1/3) ** (1/4)
    assert bleu4(["a dog next to a cat"], [["a dog next to a tree"]]) == pytest.approx((1 / 3) ** 0.25)
    # every n-gram matches but the hypothesis is shorter than the closest reference (5): BP = exp(1 - 5/4)
    assert bleu4(["two red big dogs"], [["two red big dogs run", "two red big dogs run very fast"]]) == pytest.approx(math.exp(1 - 5 / 4))
    assert bleu4(["two red dogs"], [["two red dogs run"]]) == 0.0  # no 4-gram at all


def test_mentioned_handles_plurals() -> None:
    assert mentioned("two dogs and a cat", ["dog", "cat", "tree"]) == {"dog", "cat"}
    assert mentioned("A Picture of men", ["man"]) == {"man"}


def test_relation_accepts_every_true_phrasing_and_rejects_swapped_roles() -> None:
    s = scene("relation", ["dog", "cat"], ("dog", "left", "cat"))
    assert relation_ok("a dog to the left of a cat", s)
    assert relation_ok("a cat to the right of a dog", s)
    assert relation_ok("a dog next to a cat", s)
    assert not relation_ok("a cat to the left of a dog", s)
    assert not relation_ok("a dog above a cat", s)
    up = scene("relation", ["sun", "house"], ("sun", "above", "house"))
    assert relation_ok("a house below a sun", up) and not relation_ok("a sun next to a house", up)
    act = scene("action", ["man", "dog"], ("man", "walking", "dog"))
    assert relation_ok("a man walking a dog", act) and not relation_ok("a dog walking a man", act)


def test_count() -> None:
    s = scene("count", ["dog", "dog"], count=2)
    assert count_ok("two dogs", s) and count_ok("a drawing of two dogs", s)
    assert not count_ok("three dogs", s) and not count_ok("two cats", s)


def test_a_relation_scene_that_also_shows_an_action_accepts_both() -> None:
    s = scene("relation", ["man", "dog"], ("man", "left", "dog"))
    assert relation_ok("a man walking a dog", s) and relation_ok("a dog to the right of a man", s)
    swapped = scene("relation", ["man", "dog"], ("man", "right", "dog"))  # dog first: not how walking is drawn
    assert not relation_ok("a man walking a dog", swapped)
    act = scene("action", ["man", "dog"], ("man", "walking", "dog"))
    assert not relation_ok("a man to the left of a dog", act)  # an action scene asks for its action
