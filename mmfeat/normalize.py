"""Caption normalization: one pure function used by the worker, backfill and offline evaluation.

Captioners pad their output with boilerplate ("a picture of ..."), stutter ("a dog a dog"), and
vary case, unicode forms and punctuation. Features should depend on what the caption says, not on
how it was phrased, so normalization removes those differences before tokenization.
"""

from __future__ import annotations

import re
import unicodedata

# Leading phrases that describe the medium, not the content. Longest first so that
# "a close up picture of" wins over "a picture of".
BOILERPLATE_PREFIXES: tuple[str, ...] = tuple(
    sorted(
        (
            "a picture of",
            "a photo of",
            "a photograph of",
            "an image of",
            "an illustration of",
            "a close up picture of",
            "a close up photo of",
            "a close up of",
            "this is",
            "there is",
            "there are",
            "it is",
            "image of",
            "picture of",
            "photo of",
            "arafed",  # a well-known BLIP-family artefact
            "araffe",
        ),
        key=len,
        reverse=True,
    )
)

_NON_WORD = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")
MAX_NGRAM = 4


def _strip_prefixes(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        text = " ".join(words)
        for prefix in BOILERPLATE_PREFIXES:
            if text == prefix or text.startswith(prefix + " "):
                words = words[len(prefix.split()) :]
                changed = True
                break
    return words


def _drop_repeats(words: list[str]) -> list[str]:
    """Collapse immediately repeated n-grams (n <= 4): "a dog a dog on a mat" -> "a dog on a mat"."""
    out: list[str] = []
    for w in words:
        out.append(w)
        collapsed = True
        while collapsed:  # a collapse can expose another repeat at the new end
            collapsed = False
            for n in range(1, MAX_NGRAM + 1):
                if len(out) >= 2 * n and out[-n:] == out[-2 * n : -n]:
                    del out[-n:]
                    collapsed = True
                    break
    return out


def normalize_caption(text: str, max_words: int = 32) -> str:
    """Return the canonical form of a caption: NFKC, lower case, no punctuation or boilerplate,
    no stutter, at most ``max_words`` words. Idempotent: normalize(normalize(x)) == normalize(x)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = _NON_WORD.sub(" ", text).replace("_", " ")
    words = [w.strip("'") for w in _SPACES.split(text)]
    words = [w for w in words if w]
    while True:  # collapsing a stutter can expose boilerplate ("image image of a dog") and vice versa
        cleaned = _drop_repeats(_strip_prefixes(words))
        if cleaned == words:
            break
        words = cleaned
    return " ".join(words[:max_words])


# A post's own words differ from a caption: links, @mentions and #CamelCaseTags, no medium boilerplate.
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@\w+")
_HASHTAG = re.compile(r"(?<!\w)#(\w+)")
MAX_POST_WORD = 40  # longer "words" (a pasted hash, a keyboard mash) are cut: they carry no more meaning
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalize_post_text(text: str, max_words: int = 64) -> str:
    """The canonical form of a post's title, text and tags: links and @mentions dropped, a #CamelCaseTag
    split into its words, then the caption rules but the boilerplate (NFKC, lower case, no punctuation,
    no stutter), words cut to 40 characters, at most ``max_words`` words. Idempotent."""
    text = unicodedata.normalize("NFKC", text)
    text = _MENTION.sub(" ", _URL.sub(" ", text))
    text = _HASHTAG.sub(lambda m: " " + _CAMEL.sub(" ", m.group(1)) + " ", text)
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text.casefold())
    text = _NON_WORD.sub(" ", text).replace("_", " ")
    words = [w.strip("'")[:MAX_POST_WORD] for w in _SPACES.split(text)]
    return " ".join(_drop_repeats([w for w in words if w])[:max_words])


def merge_captions(captions: list[str], max_words: int = 64) -> str:
    """Normalized frame captions as one description: each phrase (the parts between "and"/"with") once,
    in the order first seen, so a scene that repeats across frames is said once."""
    seen: set[str] = set()
    kept: list[str] = []
    for caption in captions:
        for phrase in _PHRASE.split(caption):
            phrase = phrase.strip()
            if phrase and phrase not in seen:
                seen.add(phrase)
                kept.append(phrase)
    return " ".join(" and ".join(kept).split()[:max_words])


_PHRASE = re.compile(r"\b(?:and|with)\b")
