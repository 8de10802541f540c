"""The hashing trick over words (blake2b mod buckets): no vocabulary, never out of date."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mmfeat.tokenizers.base import TextTokenizer, TokenizerSpec


class HashingTokenizer(TextTokenizer):
    name = "hash"

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets

    @property
    def version(self) -> str:  # type: ignore[override]  # derived, not stored
        return f"hash-blake2b-{self.buckets}"

    @property
    def vocab_size(self) -> int:
        return self.buckets

    def encode(self, text: str) -> list[int]:
        # blake2b, not Python's salted hash(): the same across processes and machines
        return [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "big") % self.buckets for w in text.split()]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [f"#{i}" for i in ids]


SPEC = TokenizerSpec(name="hash", label="hash", summary="hashing trick over words", load=lambda ctx: HashingTokenizer(ctx.hash_buckets))
