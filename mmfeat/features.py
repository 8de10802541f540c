"""Caption -> feature record: normalization and tokenization, shared by the live worker, backfill
and offline evaluation so every path produces byte-identical records for the same inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from mmfeat.captioner import Caption
from mmfeat.errors import SchemaError
from mmfeat.normalize import normalize_caption
from mmfeat.schemas import (
    H_CAPTIONER,
    H_SCHEMA,
    H_TOKENIZERS,
    SCHEMA_VERSION,
    FeatureRecordV1,
    UploadV1,
)
from mmfeat.tokenizers import DECODER, Tokenizer


class FeatureBuilder:
    """Builds deterministic feature records for a fixed set of tokenizers."""

    def __init__(self, tokenizers: Mapping[str, Tokenizer], names: Sequence[str], max_words: int) -> None:
        self.tokenizers = dict(tokenizers)
        self.names = list(names)
        self.max_words = max_words

    def build(self, upload: UploadV1, caption: Caption, captioner_version: str, content_sha256: str) -> FeatureRecordV1:
        text = normalize_caption(caption.text, self.max_words)
        token_ids: dict[str, list[int]] = {}
        versions: dict[str, str] = {}
        for name in self.names:
            if name == DECODER:
                token_ids[name] = list(caption.token_ids)
                versions[name] = captioner_version
            else:
                tok = self.tokenizers[name]
                token_ids[name] = tok.encode(text)
                versions[name] = tok.version
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
        )


def encode_feature(record: FeatureRecordV1) -> bytes:
    """Canonical JSON (sorted keys) so equal records are equal bytes."""
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def lineage_headers(record: FeatureRecordV1) -> list[tuple[str, bytes]]:
    tokenizers = ";".join(f"{k}={v}" for k, v in sorted(record.tokenizer_versions.items()))
    return [
        (H_CAPTIONER, record.captioner_version.encode()),
        (H_TOKENIZERS, tokenizers.encode()),
        (H_SCHEMA, str(SCHEMA_VERSION).encode()),
    ]


def item_features(raw: bytes, tokenizer: str) -> tuple[list[int], str | None]:
    """One tokenizer's id list from a raw feature record, without validating the rest of it, and the
    record's lineage (``captioner=V tokenizer=V``; None if it names no versions)."""
    try:
        obj = json.loads(raw)
        ids = obj["token_ids"][tokenizer]
    except (ValueError, KeyError, TypeError) as e:
        raise SchemaError(f"feature record has no token_ids.{tokenizer} list ({type(e).__name__}: {e})", reason="bad_features") from e
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise SchemaError(f"token_ids.{tokenizer} is not a list of ints", reason="bad_features")
    captioner, tok = obj.get("captioner_version"), (obj.get("tokenizer_versions") or {}).get(tokenizer)
    lineage = f"captioner={captioner} {tokenizer}={tok}" if isinstance(captioner, str) and isinstance(tok, str) else None
    return ids, lineage
