"""Tokenizer A: a SentencePiece unigram model trained on the caption corpus (`mmfeat train-tokenizers`)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from mmfeat.tokenizers.base import TextTokenizer, TokenizerSpec, sha8

SP_FILE = "sp-captions.model"
VOCAB_SIZE = 128


class SentencePieceTokenizer(TextTokenizer):
    name = "sp"

    def __init__(self, model_file: Path) -> None:
        data = model_file.read_bytes()
        self._sp = spm.SentencePieceProcessor(model_proto=data)
        self.version = f"sp-unigram-{self._sp.get_piece_size()}@{sha8(data)}"

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self._sp.id_to_piece(i) for i in ids]


def train_sentencepiece(captions: Iterable[str], out_file: Path, vocab_size: int = VOCAB_SIZE) -> None:
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


def _train(corpus: Sequence[str], out_dir: Path) -> str:
    train_sentencepiece(corpus, out_dir / SP_FILE, VOCAB_SIZE)
    return f"{out_dir / SP_FILE} ({VOCAB_SIZE} pieces)"


SPEC = TokenizerSpec(
    name="sp", label="A", summary="SentencePiece", load=lambda ctx: SentencePieceTokenizer(ctx.tokenizer_dir / SP_FILE),
    files=(SP_FILE,), train=_train, ranker=True,
)  # fmt: skip
