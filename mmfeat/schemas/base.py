"""The base of every record contract: strict frozen models, header names, and the codec every
consumer uses first (hostile JSON in, one-line SchemaError out; a record's JSON checked to read back)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from mmfeat.errors import SchemaError
from mmfeat.untrusted import clean

SCHEMA_VERSION = 1  # of every record but the two that have a version 2 (UploadV2, FeatureRecordV2)
TEXT_ONLY = "text"  # UploadV2.media_type of a post without media
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


R = TypeVar("R", bound=BaseModel)


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


def validate_json(model: type[R] | TypeAdapter[R], raw: bytes, reason_of: Callable[[str, str], str] | None = None) -> R:
    """Parse and validate hostile JSON bytes into ``model`` (strict, bounded nesting, UTF-8 without lone
    surrogates: pydantic's own parser refuses all three); raise SchemaError with a one-line message.

    ``model`` may be a versioned union (``UPLOAD``); its version tag is left out of the field path.
    ``reason_of(field, error type)`` of the first error may name a more specific reason than ``schema``."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_json(raw)
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise SchemaError(f"not valid JSON: {clean(first['msg'], 200)}", reason="bad_json") from e
        loc = first["loc"][1:] if isinstance(model, TypeAdapter) and first["loc"][:1] in (("v1",), ("v2",)) else first["loc"]
        where = ".".join(str(p) for p in loc) or "record"
        reason = reason_of(where, first["type"]) if reason_of else "schema"
        raise SchemaError(clean(f"{where}: {first['msg']}", 500), reason=reason) from e


def parse_json(raw: bytes) -> Any:
    """Hostile JSON bytes as Python objects, with the same guards as ``validate_json`` (nesting, UTF-8, surrogates)."""
    try:
        return from_json(raw)
    except ValueError as e:
        raise SchemaError(f"not valid JSON: {clean(e, 200)}", reason="bad_json") from e


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
