"""``decoder``: not a tokenizer of the text, the captioner decoder's own output ids passed through, versioned by
the captioner version (a new captioner is a new vocabulary)."""

from __future__ import annotations

from collections.abc import Sequence

from mmfeat.tokenizers.base import TokenizerSpec
from mmfeat.triton_contract import Caption


class DecoderIds:
    name = "decoder"
    version = "captioner"  # each record's version is the captioner's
    vocab_size = 0  # the captioner's vocabulary, not known here

    def tokenize(self, text: str, caption: Caption, captioner_version: str) -> tuple[list[int], str]:
        return list(caption.token_ids), captioner_version

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [f"<{i}>" for i in ids]


SPEC = TokenizerSpec(name="decoder", label="decoder", summary="the captioner decoder's own ids", load=lambda ctx: DecoderIds())
