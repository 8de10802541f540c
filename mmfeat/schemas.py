"""Versioned record contracts shared by producers, the worker, the tail command and tests.

Values are JSON. Upload records are validated strictly (unknown fields and wrong types are
errors); feature records are deterministic per (item, captioner version, tokenizer versions) so
a redelivered upload overwrites its feature record with the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmfeat.errors import RecordError, RecordRef, SchemaError

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


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class UploadV1(_Record):
    """A new upload on ``media.uploads`` (key = item_id). Exactly one of media_uri / media_b64."""

    schema_version: Literal[1] = 1
    item_id: str = Field(pattern=ITEM_ID_PATTERN)
    owner_id: str = Field(min_length=1, max_length=128)
    media_type: Literal["image"]
    media_uri: str | None = Field(default=None, max_length=2048)
    media_b64: str | None = None
    text: str = Field(default="", max_length=5000)
    created_at: datetime

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


class FeatureRecordV1(_Record):
    """A token-ID feature record on ``media.item-features.v1`` (compacted, key = item_id)."""

    schema_version: Literal[1] = 1
    item_id: str
    owner_id: str
    caption: str
    caption_raw: str
    token_ids: dict[str, list[int]]
    captioner_version: str
    tokenizer_versions: dict[str, str]
    content_sha256: str
    upload_created_at: datetime


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

    token_ids: list[int]
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


def dlq_record(ref: RecordRef, err: RecordError, raw_key: bytes | None, raw_value: bytes | None) -> DlqRecordV1:
    """The DLQ value for a bad record: why, where it came from, and its raw bytes (up to 1 MiB)."""
    raw = raw_value or b""
    return DlqRecordV1(
        item_id=ref.item_id, reason=err.reason, error_class=type(err).__name__, error_message=str(err),
        source_topic=ref.topic, source_partition=ref.partition, source_offset=ref.offset,
        raw_key_b64=b64(raw_key), raw_value_b64=b64(raw) if len(raw) <= RAW_IN_DLQ_MAX else None,
        raw_value_size=len(raw), failed_at=now_utc(),
    )  # fmt: skip


def parse_upload(raw: bytes) -> UploadV1:
    """Validate a raw upload value; raise SchemaError with a one-line reason."""
    try:
        return UploadV1.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise SchemaError(f"not valid JSON: {first['msg']}", reason="bad_json") from e
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise SchemaError(f"{where}: {first['msg']}") from e


def peek_item_id(raw: bytes | None) -> str | None:
    """Best-effort item id of a record that failed validation, for error messages."""
    if not raw:
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    item = obj.get("item_id") if isinstance(obj, dict) else None
    return item if isinstance(item, str) and len(item) <= 128 else None


def now_utc() -> datetime:
    return datetime.now(UTC)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
