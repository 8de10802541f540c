"""Feature records on ``media.item-features.v1``, versions 1 and 2 (same topic, key and compaction)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from mmfeat.schemas.base import TokenIds, _Record, validate_json
from mmfeat.schemas.uploads import version_tag
from mmfeat.triton_contract import unpack_embedding


class EmbeddingV1(_Record):
    """A dense content embedding, compact: ``dim`` float16 values, little-endian, base64 (no padding lost)."""

    dtype: Literal["float16"] = "float16"
    dim: int = Field(ge=1, le=4096)
    b64: str

    @model_validator(mode="after")
    def _width_matches(self) -> EmbeddingV1:
        try:
            raw = base64.b64decode(self.b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("embedding.b64 is not valid base64") from e
        if len(raw) != 2 * self.dim:
            raise ValueError(f"embedding.b64 holds {len(raw)} bytes; dim {self.dim} float16 values are {2 * self.dim}")
        return self

    @classmethod
    def of(cls, packed: bytes) -> EmbeddingV1:
        """From float16 little-endian bytes (``Caption.embedding``)."""
        return cls(dim=len(packed) // 2, b64=base64.b64encode(packed).decode())

    def packed(self) -> bytes:
        return base64.b64decode(self.b64)

    def array(self) -> np.ndarray:
        """The values as float32."""
        return unpack_embedding(self.packed())


class FeatureRecordV1(_Record):
    """A token-ID feature record on ``media.item-features.v1`` (compacted, key = item_id). ``embedding`` is the
    captioner's content embedding of the same call (absent from records made before it, or by a model
    without one): an additive field, so v1 readers that ignore unknown fields read on."""

    schema_version: Literal[1] = 1
    item_id: str
    owner_id: str
    caption: str
    caption_raw: str
    token_ids: dict[str, TokenIds]
    captioner_version: str
    tokenizer_versions: dict[str, str]
    content_sha256: str
    upload_created_at: datetime
    embedding: EmbeddingV1 | None = None

    def ids(self, tokenizer: str, source: str = "caption") -> list[int]:
        """One tokenizer's id list of the caption (the only source of version 1; others are empty)."""
        return list(self.token_ids.get(tokenizer, [])) if source == "caption" else []


class SourceV2(_Record):
    """One source of an item's words: its normalized text, what its model said before normalization, and
    the token-id list of each tokenizer that reads it."""

    text: str
    raw: str = Field(max_length=20_000)
    token_ids: dict[str, TokenIds]


class FrameV2(_Record):
    """One sampled video frame: where it is (seconds from the start) and its own caption, normalized."""

    t_s: float = Field(ge=0)
    caption: str


class FeatureRecordV2(_Record):
    """A feature record, version 2 (same topic, key and compaction as version 1): one entry per source of
    words (``caption``, ``post_text``; later ``ocr``, ``asr``), each with its text and token-id lists.

    ``sources.caption`` carries what version 1 had at the top level (caption, caption_raw, token_ids), with the
    same values for the same upload; a video's caption is its frame captions merged, the frames themselves in
    ``frames``. ``model_versions`` names each model that produced a source (``captioner`` ...)."""

    schema_version: Literal[2] = 2
    item_id: str
    owner_id: str
    media_type: str
    sources: dict[str, SourceV2]
    model_versions: dict[str, str]
    tokenizer_versions: dict[str, str]
    content_sha256: str
    upload_created_at: datetime
    frames: list[FrameV2] = Field(default_factory=list, max_length=256)
    embedding: EmbeddingV1 | None = None

    def ids(self, tokenizer: str, source: str = "caption") -> list[int]:
        """One source's id list of one tokenizer (empty when the item has no such source)."""
        src = self.sources.get(source)
        return list(src.token_ids.get(tokenizer, [])) if src is not None else []


FeatureRecord = FeatureRecordV1 | FeatureRecordV2


FEATURE_RECORD = TypeAdapter(
    Annotated[Annotated[FeatureRecordV1, Tag("v1")] | Annotated[FeatureRecordV2, Tag("v2")], Discriminator(version_tag)]
)


def parse_feature_record(raw: bytes) -> FeatureRecord:
    """A feature record of either version, validated in full."""
    return validate_json(FEATURE_RECORD, raw)
