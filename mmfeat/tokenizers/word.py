"""Tokenizer B: a closed word vocabulary from the caption corpus; unknown words map to 1 (`mmfeat train-tokenizers`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmfeat.tokenizers.base import TextTokenizer, TokenizerSpec, sha8

WORD_FILE = "word-captions.json"
UNK_WORD_ID = 1


class WordVocabTokenizer(TextTokenizer):
    name = "word"

    def __init__(self, vocab_file: Path) -> None:
        data = vocab_file.read_bytes()
        self._ids: dict[str, int] = json.loads(data)["vocab"]
        self._words = {i: w for w, i in self._ids.items()}
        self.version = f"word-{len(self._ids)}@{sha8(data)}"

    @property
    def vocab_size(self) -> int:
        return 1 + max(self._ids.values(), default=UNK_WORD_ID)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, UNK_WORD_ID) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self._words.get(i, "<unk>") for i in ids]


def build_word_vocab(captions: Iterable[str], out_file: Path, min_count: int = 2) -> int:
    """Tokenizer B's vocabulary: words seen ``min_count`` times, most frequent first (ids from 2)."""
    counts = Counter(w for c in captions for w in c.split())
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    vocab = {w: i + 2 for i, w in enumerate(words)}
    out_file.write_text(json.dumps({"pad": 0, "unk": UNK_WORD_ID, "vocab": vocab}, indent=0, sort_keys=True))
    return len(vocab)


def _train(corpus: Sequence[str], out_dir: Path) -> str:
    return f"{out_dir / WORD_FILE} ({build_word_vocab(corpus, out_dir / WORD_FILE)} words)"


SPEC = TokenizerSpec(
    name="word", label="B", summary="word vocabulary", load=lambda ctx: WordVocabTokenizer(ctx.tokenizer_dir / WORD_FILE),
    files=(WORD_FILE,), train=_train, ranker=True,
)  # fmt: skip
