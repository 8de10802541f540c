"""Tokenizer C: semantic IDs, the residual K-means codes of the captioner's content embedding
(mmfeat/semantic_ids.py), as two id lists from one codebook file:

    sid         the codes, one per level with per-level offsets
    sid_prefix  one token per code prefix (Meta's ads ranking feeds these)

A codebook quantizes one captioner's embedding space, so a record from another captioner version (or one
without an embedding) is that record's error (``codebook_mismatch``, ``no_embedding``), never a silent
list of wrong codes. Neither is published unless named in ``MMFEAT_TOKENIZERS``: the default captioner's
codebook is committed, and a deployment serving another captioner trains its own first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmfeat.errors import RecordError
from mmfeat.semantic_ids import CODEBOOK_FILE, Codebook, code_ids, prefix_ids, prefix_vocab, quality, train_codebook
from mmfeat.tokenizers.base import Context, TokenizerSpec
from mmfeat.triton_contract import Caption

# Chosen by `mmfeat train-tokenizers`' sweep (docs/semantic-ids.md): 3 levels of 64 codes.
LEVELS, CODES, SEED = 3, 64, 0


@lru_cache(maxsize=8)
def _codebook(path: Path, mtime_ns: int) -> Codebook:
    return Codebook.load(path)


def load_codebook(tokenizer_dir: Path) -> Codebook:
    path = tokenizer_dir / CODEBOOK_FILE
    return _codebook(path, path.stat().st_mtime_ns)  # both lists of one builder share one loaded file


class SemanticIds:
    """Codes (``prefixes=False``) or prefix tokens of the record's own content embedding."""

    def __init__(self, book: Codebook, *, prefixes: bool) -> None:
        self.book, self.prefixes = book, prefixes
        self.name = "sid_prefix" if prefixes else "sid"
        self.version = f"{'sid-prefix' if prefixes else 'sid'}-{book.shape}@{book.digest}"

    @property
    def vocab_size(self) -> int:
        return prefix_vocab(self.book.levels, self.book.size) if self.prefixes else self.book.levels * self.book.size

    def codes(self, caption: Caption, captioner_version: str) -> np.ndarray:
        if captioner_version != self.book.captioner_version:
            raise RecordError(
                f"the semantic-ID codebook {self.book.shape}@{self.book.digest} quantizes captioner {self.book.captioner_version}, "
                f"not {captioner_version}: train one for it (`mmfeat train-tokenizers`) or leave sid out of MMFEAT_TOKENIZERS",
                reason="codebook_mismatch",
            )
        vector = caption.embedding_array()
        if len(vector) != self.book.dim:
            raise RecordError(f"content embedding has {len(vector)} values, the codebook {self.book.dim}", reason="no_embedding")
        return self.book.encode(vector[None, :])[0]

    def tokenize(self, text: str, caption: Caption, captioner_version: str) -> tuple[list[int], str]:
        codes = self.codes(caption, captioner_version)
        ids = prefix_ids(codes, self.book.size) if self.prefixes else code_ids(codes, self.book.size)
        return ids, self.version

    def decode(self, ids: Sequence[int]) -> list[str]:
        k = self.book.size
        if not self.prefixes:
            return [f"L{i // k + 1}:{i % k}" for i in ids]
        out = []
        for i in ids:
            level, offset = 0, 0
            while level < self.book.levels - 1 and i >= offset + k ** (level + 1):
                offset += k ** (level + 1)
                level += 1
            number, digits = i - offset, []
            for _ in range(level + 1):
                number, c = divmod(number, k)
                digits.append(str(c))
            out.append("/".join(reversed(digits)))
        return out


def train_from_embeddings(embeddings: np.ndarray, captioner_version: str, corpus: dict[str, Any], out_dir: Path) -> str:
    """The committed codebook's recipe: LEVELS x CODES, seeded; what it wrote, with its quality on the corpus."""
    book = train_codebook(embeddings, levels=LEVELS, codes=CODES, seed=SEED, captioner_version=captioner_version, corpus=corpus)
    (out_dir / CODEBOOK_FILE).write_bytes(book.to_bytes())
    q = quality(book, embeddings)
    used = ", ".join(f"{100 * level['codes_used']:.0f}%" for level in q["levels"])
    return (
        f"{out_dir / CODEBOOK_FILE} ({book.shape} over {len(embeddings)} embeddings of {captioner_version}: codes used {used}; "
        f"unique full codes {100 * q['unique_full_code_share']:.1f}%; relative error {q['relative_error']:.3f})"
    )


def _load(ctx: Context, *, prefixes: bool) -> SemanticIds:
    return SemanticIds(load_codebook(ctx.tokenizer_dir), prefixes=prefixes)


SPEC = TokenizerSpec(
    name="sid",
    label="C codes",
    summary="semantic IDs: residual K-means codes of the content embedding",
    load=lambda ctx: _load(ctx, prefixes=False),
    files=(CODEBOOK_FILE,),
    train_embeddings=train_from_embeddings,
    ranker=True,
    default=False,
)
PREFIX_SPEC = TokenizerSpec(
    name="sid_prefix",
    label="C prefixes",
    summary="semantic IDs: one token per code prefix",
    load=lambda ctx: _load(ctx, prefixes=True),
    files=(CODEBOOK_FILE,),
    ranker=True,
    default=False,
)
