"""Deferred and DLQ records, and the profiles app's records."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from mmfeat.errors import RecordError, RecordRef
from mmfeat.schemas.base import TokenIds, _Record, b64, now_utc
from mmfeat.untrusted import clean


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
