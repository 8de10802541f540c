"""What a tokenizer is, and what the registry knows about each one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmfeat.triton_contract import Caption


class Tokenizer(Protocol):
    """Normalized caption text -> a token-id list feature."""

    name: str

    @property
    def version(self) -> str:
        """Changes whenever the output could change; it travels in the feature record's lineage."""
        ...

    @property
    def vocab_size(self) -> int:
        """Ids are in [0, vocab_size): the size of an embedding table over them (0: not known here)."""
        ...

    def tokenize(self, text: str, caption: Caption, captioner_version: str) -> tuple[list[int], str]:
        """The ids of a normalized caption and the version that made them (the raw caption is there for
        tokenizers that pass the captioner's own ids through)."""
        ...

    def decode(self, ids: Sequence[int]) -> list[str]: ...


class TextTokenizer:
    """A tokenizer of the normalized text alone: ``tokenize`` is ``encode`` at its own version."""

    name = "?"
    version = "?"

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def tokenize(self, text: str, caption: Caption, captioner_version: str) -> tuple[list[int], str]:
        return self.encode(text), self.version


@dataclass(frozen=True)
class Context:
    """Where tokenizers find their files, and their settings."""

    tokenizer_dir: Path
    hash_buckets: int = 1 << 20


@dataclass(frozen=True)
class TokenizerSpec:
    """One registry line's worth: how to load a tokenizer, how to train its files, and where it is used."""

    name: str
    label: str  # how the docs and the reports call it ("A", "B")
    summary: str
    load: Callable[[Context], Tokenizer]
    files: tuple[str, ...] = ()  # what its training writes into the tokenizer dir
    train: Callable[[Sequence[str], Path], str] | None = None  # normalized corpus, dir -> what it wrote, one line
    # or trained on content embeddings: (embeddings [N, dim], captioner version, corpus meta, dir) -> what it wrote
    train_embeddings: Callable[[np.ndarray, str, dict[str, Any], Path], str] | None = None
    ranker: bool = False  # the ranker's item token lists include it
    default: bool = True  # published unless MMFEAT_TOKENIZERS says otherwise


def sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]
