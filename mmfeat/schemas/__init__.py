"""Versioned record contracts shared by producers, the worker, the profiles app, the tail command and tests.

Values are JSON. Upload records are validated strictly (unknown fields and wrong types are errors); feature
records are deterministic per (item, model versions, tokenizer versions) so a redelivered upload overwrites
its feature record with the same bytes. Uploads and feature records have versions 1 and 2 (docs/topics.md);
``schema_version`` picks the model. Every topic's schema is published as JSON Schema under docs/schemas/.
"""

from mmfeat.schemas.base import (
    H_CAPTIONER,
    H_DEDUPE,
    H_FEATURED_AT,
    H_REASON,
    H_SCHEMA,
    H_SOURCE,
    H_TOKENIZERS,
    ITEM_ID_PATTERN,
    SCHEMA_VERSION,
    TEXT_ONLY,
    TOKEN_ID_MAX,
    TokenId,
    TokenIds,
    _Record,
    b64,
    encode_record,
    first_error,
    now_utc,
    parse_json,
    peek_item_id,
    validate_json,
)
from mmfeat.schemas.items import (
    FEATURE_RECORD,
    EmbeddingV1,
    FeatureRecord,
    FeatureRecordV1,
    FeatureRecordV2,
    FrameV2,
    SourceV2,
    parse_feature_record,
)
from mmfeat.schemas.records import (
    ERROR_MESSAGE_MAX,
    RAW_IN_DLQ_MAX,
    DeferredRecordV1,
    DlqRecordV1,
    EventProfileV1,
    UnmatchedEngagementV1,
    UserProfileV1,
    dlq_record,
)
from mmfeat.schemas.uploads import UPLOAD, Upload, UploadV1, UploadV2, inline_bytes, parse_upload

__all__ = [
    "ERROR_MESSAGE_MAX", "FEATURE_RECORD", "H_CAPTIONER", "H_DEDUPE", "H_FEATURED_AT", "H_REASON", "H_SCHEMA", "H_SOURCE",
    "H_TOKENIZERS", "ITEM_ID_PATTERN", "RAW_IN_DLQ_MAX", "SCHEMA_VERSION", "TEXT_ONLY", "TOKEN_ID_MAX", "UPLOAD",
    "DeferredRecordV1", "DlqRecordV1", "EmbeddingV1", "EventProfileV1", "FeatureRecord", "FeatureRecordV1", "FeatureRecordV2",
    "FrameV2", "SourceV2", "TokenId", "TokenIds", "UnmatchedEngagementV1", "Upload", "UploadV1", "UploadV2", "UserProfileV1",
    "_Record", "b64", "dlq_record", "encode_record", "first_error", "inline_bytes", "now_utc", "parse_feature_record",
    "parse_json", "parse_upload", "peek_item_id", "validate_json",
]  # fmt: skip
