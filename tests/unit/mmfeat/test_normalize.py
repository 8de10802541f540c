import random

import pytest

from mmfeat.normalize import normalize_caption


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A Picture of a DOG.", "a dog"),
        ("an image of   a red   apple!!", "a red apple"),
        ("there is a close up picture of a cat", "a cat"),
        ("arafed man walking a dog", "man walking a dog"),
        ("a dog a dog a dog on a mat", "a dog on a mat"),
        ("the the cat", "the cat"),
        ("two cats, two cats and a bird", "two cats and a bird"),
        ("ｆｕｌｌｗｉｄｔｈ Ｃａｔ", "fullwidth cat"),  # NFKC
        ("a cafe\u0301 table", "a café table"),
        ("tab\tand\nnewline", "tab and newline"),
        ("", ""),
        ("a picture of", ""),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize_caption(raw) == expected


def test_length_cap_in_words() -> None:
    words = [f"w{i}" for i in range(50)]
    assert normalize_caption(" ".join(words), max_words=5) == "w0 w1 w2 w3 w4"


def test_repeat_removal_exposing_another_repeat() -> None:
    # dropping the second "b c" leaves "a a", which must collapse too
    assert normalize_caption("a b c b c a b c b c") == "a b c"


def test_idempotent_on_random_captions() -> None:
    rng = random.Random(7)
    vocab = ["a", "dog", "cat", "the", "picture", "of", "photo", "red", "an", "image", "Dog!", "there", "is"]
    for _ in range(2000):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 20)))
        once = normalize_caption(text, max_words=8)
        assert normalize_caption(once, max_words=8) == once
        assert len(once.split()) <= 8
