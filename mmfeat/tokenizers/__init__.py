"""Caption tokenizers, as a registry: a normalized caption -> token-id list features.

    sp       tokenizer A: SentencePiece unigram trained on the caption corpus
    word     tokenizer B: a closed word vocabulary (decodes to words; the profiles' default)
    hash     the hashing trick over words
    decoder  the captioner decoder's own ids, passed through
    sid      tokenizer C: semantic IDs, residual K-means codes of the captioner's content embedding
    sid_prefix  tokenizer C's other list: one token per code prefix

The settings (which lists are published, which one profiles aggregate), `mmfeat train-tokenizers`, the
ranker's item lists and the exporter all derive from ``TOKENIZERS``. Adding a tokenizer is one module here
plus one line below (docs/adding-a-tokenizer.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mmfeat.errors import ConfigError
from mmfeat.tokenizers import decoder, hashing, semantic, sentencepiece, word
from mmfeat.tokenizers.base import Context, TextTokenizer, Tokenizer, TokenizerSpec
from mmfeat.tokenizers.hashing import HashingTokenizer
from mmfeat.tokenizers.sentencepiece import SP_FILE, train_sentencepiece
from mmfeat.tokenizers.word import UNK_WORD_ID, WORD_FILE, build_word_vocab

TOKENIZERS: dict[str, TokenizerSpec] = {
    spec.name: spec for spec in (sentencepiece.SPEC, word.SPEC, hashing.SPEC, decoder.SPEC, semantic.SPEC, semantic.PREFIX_SPEC)
}
DECODER = decoder.SPEC.name


def ranked() -> tuple[str, ...]:
    """The tokenizers whose item lists the ranker reads."""
    return tuple(name for name, spec in TOKENIZERS.items() if spec.ranker)


def trainable() -> tuple[TokenizerSpec, ...]:
    """The tokenizers `mmfeat train-tokenizers` trains on the caption corpus."""
    return tuple(spec for spec in TOKENIZERS.values() if spec.train is not None)


def embedding_trainable() -> tuple[TokenizerSpec, ...]:
    """The tokenizers `mmfeat train-tokenizers` trains on content embeddings."""
    return tuple(spec for spec in TOKENIZERS.values() if spec.train_embeddings is not None)


def published_by_default() -> list[str]:
    """``MMFEAT_TOKENIZERS``' default."""
    return [name for name, spec in TOKENIZERS.items() if spec.default]


def spec_of(name: str) -> TokenizerSpec:
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ConfigError(f"unknown tokenizer {name!r}; choose from {', '.join(TOKENIZERS)}") from None


def load_tokenizers(names: Iterable[str], tokenizer_dir: Path, hash_buckets: int) -> dict[str, Tokenizer]:
    """The named tokenizers, loaded; a ConfigError naming the fix when one is unknown or its files are missing."""
    ctx = Context(tokenizer_dir, hash_buckets)
    out: dict[str, Tokenizer] = {}
    for name in names:
        spec = spec_of(name)
        try:
            out[name] = spec.load(ctx)
        except OSError as e:
            raise ConfigError(f"tokenizer {name!r} files missing in {tokenizer_dir}: run `mmfeat train-tokenizers`") from e
    return out


__all__ = [
    "DECODER", "SP_FILE", "TOKENIZERS", "UNK_WORD_ID", "WORD_FILE", "Context", "HashingTokenizer", "TextTokenizer", "Tokenizer",
    "TokenizerSpec", "build_word_vocab", "embedding_trainable", "load_tokenizers", "published_by_default", "ranked", "spec_of",
    "train_sentencepiece", "trainable",
]  # fmt: skip
