"""Versioned record contracts shared by producers, the worker, the tail command and tests.

Values are JSON. Upload records are validated strictly (unknown fields and wrong types are
errors); feature records are deterministic per (item, captioner version, tokenizer versions) so
a redelivered upload overwrites its feature record with the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import from_json

from mmfeat.errors import RecordError, RecordRef, SchemaError
from mmfeat.media import KINDS
from mmfeat.triton_contract import unpack_embedding
from mmfeat.untrusted import clean

SCHEMA_VERSION = 1
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"

# Header names carried on feature records (lineage) and on DLQ/deferred records.
H_CAPTIONER = "mmfeat-captioner-version"
H_TOKENIZERS = "mmfeat-tokenizer-versions"
H_SCHEMA = "mmfeat-schema-version"
H_FEATURED_AT = "mmfeat-featured-at"
H_SOURCE = "mmfeat-source"
H_DEDUPE = "mmfeat-dedupe"
H_REASON = "mmfeat-reason"


# Token ids are non-negative and fit an int32 embedding index (the ranker's tables); a list is bounded too.
TOKEN_ID_MAX = (1 << 31) - 1
TokenId = Annotated[int, Field(ge=0, le=TOKEN_ID_MAX)]
TokenIds = Annotated[list[TokenId], Field(max_length=4096)]


class _Record(BaseModel):
    # allow_inf_nan=False: a non-finite float serializes as null, which the schema then refuses on read;
    # refusing it on construction keeps every published record readable by its own schema.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class UploadV1(_Record):
    """A new upload on ``media.uploads`` (key = item_id). Exactly one of media_uri / media_b64."""

    schema_version: Literal[1] = 1
    item_id: str = Field(pattern=ITEM_ID_PATTERN)
    owner_id: str = Field(min_length=1, max_length=128)
    media_type: str  # a kind of mmfeat.media.KINDS
    media_uri: str | None = Field(default=None, max_length=2048)
    media_b64: str | None = None
    text: str = Field(default="", max_length=5000)
    created_at: datetime

    @field_validator("media_type")
    @classmethod
    def _known_kind(cls, media_type: str) -> str:
        if media_type not in KINDS:
            raise ValueError(f"media_type must be one of {', '.join(sorted(KINDS))}")
        return media_type

    @model_validator(mode="after")
    def _one_media_source(self) -> UploadV1:
        if (self.media_uri is None) == (self.media_b64 is None):
            raise ValueError("exactly one of media_uri and media_b64 must be set")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must carry a timezone (ISO-8601 with offset or Z)")
        return self

    def inline_bytes(self) -> bytes:
        """The decoded inline media; a SchemaError if it is not valid base64."""
        assert self.media_b64 is not None
        try:
            return base64.b64decode(self.media_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise SchemaError("media_b64 is not valid base64") from e


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


class DeferredRecordV1(_Record):
    """An upload the gate deferred (budget overflow), verbatim so it can be replayed."""

    schema_version: Literal[1] = 1
    item_id: str
    reason: str
    upload_json: str
    source: str
    deferred_at: datetime


class DlqRecordV1(_Record):
    """A record that could not become a feature, with why, and the raw bytes so nothing is lost."""

    schema_version: Literal[1] = 1
    item_id: str | None
    reason: str
    error_class: str
    error_message: str
    source_topic: str
    source_partition: int
    source_offset: int
    raw_key_b64: str | None
    raw_value_b64: str | None  # None when over 1 MiB: the record stays at its source coordinates
    raw_value_size: int
    failed_at: datetime


class EventProfileV1(_Record):
    """One event type of a profile: an id-list feature with weights, ready for a weighted EmbeddingBag."""

    token_ids: TokenIds
    weights: list[float]
    count: int


class UserProfileV1(_Record):
    """A user's interest profile on ``user.profiles.v1`` (compacted, key = user_id)."""

    schema_version: Literal[1] = 1
    user_id: str
    tokenizer: str
    features_topic: str
    half_life_s: float
    as_of: datetime | None  # event time the weights are expressed at (the newest engagement applied)
    events: dict[str, EventProfileV1]
    engagements: int
    last_engagement_id: str | None  # the engagement whose application produced this version
    updated_at: datetime
    # "captioner=<version> <tokenizer>=<version>" of the item features applied -> engagements (the most used 8)
    feature_lineage: dict[str, int] = Field(default_factory=dict)
    # per engagements partition, the next offset not yet admitted: the profile reflects the log up to there
    # (engagements still waiting for their item's features aside)
    source_offsets: dict[str, int] = Field(default_factory=dict)


class UnmatchedEngagementV1(_Record):
    """An engagement that was never applied because its item's features did not arrive in time or room."""

    schema_version: Literal[1] = 1
    reason: Literal["pending_full", "pending_expired"]
    engagement_id: str
    user_id: str
    item_id: str
    event: str
    value: float
    ts: datetime
    queued_at: datetime
    dropped_at: datetime


RAW_IN_DLQ_MAX = 1 << 20  # larger raw values stay at their source coordinates only
ERROR_MESSAGE_MAX = 2000

R = TypeVar("R", bound=BaseModel)


def dlq_record(ref: RecordRef, err: RecordError, raw_key: bytes | None, raw_value: bytes | None) -> DlqRecordV1:
    """The DLQ value for a bad record: why, where it came from, and its raw bytes (up to 1 MiB).

    Never fails: the id and the message are escaped (they may quote hostile text), so the record always encodes."""
    raw = raw_value or b""
    return DlqRecordV1(
        item_id=None if ref.item_id is None else clean(ref.item_id, 140), reason=clean(err.reason, 64),
        error_class=type(err).__name__, error_message=clean(err, ERROR_MESSAGE_MAX),
        source_topic=ref.topic, source_partition=ref.partition, source_offset=ref.offset,
        raw_key_b64=b64(raw_key), raw_value_b64=b64(raw) if len(raw) <= RAW_IN_DLQ_MAX else None,
        raw_value_size=len(raw), failed_at=now_utc(),
    )  # fmt: skip


def encode_record(record: BaseModel, *, sort_keys: bool = False) -> bytes:
    """A record's JSON, checked to read back as an equal record of its own schema (what every consumer does first).

    ``sort_keys`` gives canonical bytes (equal records, equal bytes). Raises SchemaError (``unpublishable``)."""
    if sort_keys:
        data = json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    else:
        data = record.model_dump_json().encode()
    try:
        back = type(record).model_validate_json(data)
    except ValidationError as e:
        raise SchemaError(f"built a {type(record).__name__} its schema refuses: {first_error(e)}", reason="unpublishable") from e
    if back != record:
        raise SchemaError(f"a {type(record).__name__} does not read back equal to itself", reason="unpublishable")
    return data


def first_error(e: ValidationError) -> str:
    """The first validation error as ``field: message``, one line."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{where}: {first['msg']}"


def validate_json(model: type[R], raw: bytes, reason_of: Callable[[str, str], str] | None = None) -> R:
    """Parse and validate hostile JSON bytes into ``model`` (strict, bounded nesting, UTF-8 without lone
    surrogates: pydantic's own parser refuses all three); raise SchemaError with a one-line message.

    ``reason_of(field, error type)`` of the first error may name a more specific reason than ``schema``."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise SchemaError(f"not valid JSON: {clean(first['msg'], 200)}", reason="bad_json") from e
        where = ".".join(str(p) for p in first["loc"]) or "record"
        reason = reason_of(where, first["type"]) if reason_of else "schema"
        raise SchemaError(clean(f"{where}: {first['msg']}", 500), reason=reason) from e


def parse_json(raw: bytes) -> Any:
    """Hostile JSON bytes as Python objects, with the same guards as ``validate_json`` (nesting, UTF-8, surrogates)."""
    try:
        return from_json(raw)
    except ValueError as e:
        raise SchemaError(f"not valid JSON: {clean(e, 200)}", reason="bad_json") from e


def parse_upload(raw: bytes) -> UploadV1:
    """Validate a raw upload value; raise SchemaError with a one-line reason."""
    return validate_json(UploadV1, raw)


_ITEM_ID = re.compile(ITEM_ID_PATTERN)


def peek_item_id(raw: bytes | None) -> str | None:
    """Best-effort item id of a record that failed validation, for error messages; escaped when it is not a valid id."""
    if not raw:
        return None
    try:
        obj = from_json(raw)
    except ValueError:
        return None
    item = obj.get("item_id") if isinstance(obj, dict) else None
    if not isinstance(item, str):
        return None
    return item if _ITEM_ID.match(item) else clean(item, 128)


def now_utc() -> datetime:
    return datetime.now(UTC)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
