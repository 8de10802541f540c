"""Caption tokenizers that turn a normalized caption into a token-ID list feature.

- ``sp``   (tokenizer A): a SentencePiece unigram model trained on the caption corpus
            by ``mmfeat train-tokenizers``.
- ``word`` (tokenizer B): a closed word vocabulary from the same corpus; unknown words map to 1.
- ``hash``: the hashing trick over words (blake2b mod buckets), no vocabulary, never out of date.
- ``decoder``: not a tokenizer here: the captioner decoder's own output ids, passed through
            (versioned by the captioner version).

Each tokenizer has a ``version`` that changes whenever its output could change; it travels in
the feature record's lineage.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

from mmfeat.errors import ConfigError

SP_FILE = "sp-captions.model"
WORD_FILE = "word-captions.json"
DECODER = "decoder"
UNK_WORD_ID = 1


class Tokenizer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> list[str]: ...


def _sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


class SentencePieceTokenizer:
    name = "sp"

    def __init__(self, model_file: Path) -> None:
        data = model_file.read_bytes()
        self._sp = spm.SentencePieceProcessor(model_proto=data)
        self.version = f"sp-unigram-{self._sp.get_piece_size()}@{_sha8(data)}"

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self._sp.id_to_piece(i) for i in ids]


class WordVocabTokenizer:
    name = "word"

    def __init__(self, vocab_file: Path) -> None:
        data = vocab_file.read_bytes()
        self._ids: dict[str, int] = json.loads(data)["vocab"]
        self._words = {i: w for w, i in self._ids.items()}
        self.version = f"word-{len(self._ids)}@{_sha8(data)}"

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, UNK_WORD_ID) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self._words.get(i, "<unk>") for i in ids]


@dataclass(frozen=True)
class HashingTokenizer:
    buckets: int
    name: str = "hash"

    @property
    def version(self) -> str:
        return f"hash-blake2b-{self.buckets}"

    def encode(self, text: str) -> list[int]:
        return [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "big") % self.buckets for w in text.split()]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [f"#{i}" for i in ids]


def load_tokenizers(names: Iterable[str], tokenizer_dir: Path, hash_buckets: int) -> dict[str, Tokenizer]:
    """The named tokenizers, ``decoder`` excluded (its ids come from the captioner)."""
    out: dict[str, Tokenizer] = {}
    for name in names:
        if name == DECODER:
            continue
        try:
            if name == "sp":
                out[name] = SentencePieceTokenizer(tokenizer_dir / SP_FILE)
            elif name == "word":
                out[name] = WordVocabTokenizer(tokenizer_dir / WORD_FILE)
            elif name == "hash":
                out[name] = HashingTokenizer(hash_buckets)
            else:
                raise ConfigError(f"unknown tokenizer {name!r}; choose from sp, word, hash, decoder")
        except OSError as e:
            raise ConfigError(f"tokenizer {name!r} files missing in {tokenizer_dir}: run `mmfeat train-tokenizers`") from e
    return out


def train_sentencepiece(captions: Iterable[str], out_file: Path, vocab_size: int = 128) -> None:
    """Train tokenizer A on normalized captions. Single-threaded so the model is reproducible."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    out_file.write_bytes(buf.getvalue())


def build_word_vocab(captions: Iterable[str], out_file: Path, min_count: int = 2) -> int:
    """Tokenizer B's vocabulary: words seen ``min_count`` times, most frequent first (ids from 2)."""
    counts = Counter(w for c in captions for w in c.split())
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    vocab = {w: i + 2 for i, w in enumerate(words)}
    out_file.write_text(json.dumps({"pad": 0, "unk": UNK_WORD_ID, "vocab": vocab}, indent=0, sort_keys=True))
    return len(vocab)
