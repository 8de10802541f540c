"""Caption -> feature record: normalization and tokenization, shared by the live worker, backfill
and offline evaluation so every path produces byte-identical records for the same inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from mmfeat.errors import SchemaError
from mmfeat.normalize import normalize_caption
from mmfeat.schemas import (
    H_CAPTIONER,
    H_SCHEMA,
    H_TOKENIZERS,
    SCHEMA_VERSION,
    EmbeddingV1,
    FeatureRecordV1,
    TokenIds,
    UploadV1,
    encode_record,
    validate_json,
)
from mmfeat.settings import Features
from mmfeat.tokenizers import Tokenizer, load_tokenizers
from mmfeat.triton_contract import Caption


class FeatureBuilder:
    """Builds deterministic feature records for a fixed set of tokenizers."""

    def __init__(self, tokenizers: Mapping[str, Tokenizer], names: Sequence[str], max_words: int) -> None:
        self.tokenizers = dict(tokenizers)
        self.names = list(names)
        self.max_words = max_words

    @classmethod
    def of(cls, f: Features) -> FeatureBuilder:
        """The builder the settings' features section describes (the worker's, the backfill's, the ranker world's)."""
        return cls(load_tokenizers(f.tokenizers, f.tokenizer_dir, f.hash_buckets), f.tokenizers, f.caption_max_words)

    def build(self, upload: UploadV1, caption: Caption, captioner_version: str, content_sha256: str) -> FeatureRecordV1:
        text = normalize_caption(caption.text, self.max_words)
        token_ids: dict[str, list[int]] = {}
        versions: dict[str, str] = {}
        for name in self.names:
            token_ids[name], versions[name] = self.tokenizers[name].tokenize(text, caption, captioner_version)
        return FeatureRecordV1(
            item_id=upload.item_id,
            owner_id=upload.owner_id,
            caption=text,
            caption_raw=caption.text,
            token_ids=token_ids,
            captioner_version=captioner_version,
            tokenizer_versions=versions,
            content_sha256=content_sha256,
            upload_created_at=upload.created_at,
            embedding=EmbeddingV1.of(caption.embedding) if caption.embedding else None,
        )


def encode_feature(record: FeatureRecordV1) -> bytes:
    """Canonical JSON (sorted keys) so equal records are equal bytes; checked to read back as itself."""
    return encode_record(record, sort_keys=True)


def lineage_headers(record: FeatureRecordV1) -> list[tuple[str, bytes]]:
    tokenizers = ";".join(f"{k}={v}" for k, v in sorted(record.tokenizer_versions.items()))
    return [
        (H_CAPTIONER, record.captioner_version.encode()),
        (H_TOKENIZERS, tokenizers.encode()),
        (H_SCHEMA, str(SCHEMA_VERSION).encode()),
    ]


class _FeatureTokens(BaseModel):
    """The part of a feature record the profiles app reads; the rest is not its business (nor validated)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    token_ids: dict[str, TokenIds]
    captioner_version: str | None = None
    tokenizer_versions: dict[str, str] | None = None


def item_features(raw: bytes, tokenizer: str) -> tuple[list[int], str | None]:
    """One tokenizer's id list from a raw feature record, and the record's lineage (``captioner=V tokenizer=V``;
    None if it names no versions). Only the fields read are validated, strictly: ids are ints in
    [0, 2^31) (not booleans), versions are strings; anything else is a SchemaError (``bad_features``)."""
    view = validate_json(_FeatureTokens, raw, lambda where, kind: "bad_features")
    ids = view.token_ids.get(tokenizer)
    if ids is None:
        raise SchemaError(f"feature record has no token_ids.{tokenizer} list", reason="bad_features")
    captioner, tok = view.captioner_version, (view.tokenizer_versions or {}).get(tokenizer)
    lineage = f"captioner={captioner} {tokenizer}={tok}" if captioner is not None and tok is not None else None
    return list(ids), lineage
