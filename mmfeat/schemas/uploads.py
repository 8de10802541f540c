"""Upload records on ``media.uploads``, versions 1 and 2, and the parser that picks the version."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, field_validator, model_validator
from pydantic.json_schema import JsonDict, JsonValue

from mmfeat.errors import SchemaError
from mmfeat.media import KINDS
from mmfeat.schemas.base import ITEM_ID_PATTERN, TEXT_ONLY, _Record, validate_json


def _enum(values: list[str]) -> JsonDict:
    return {"enum": list[JsonValue](values)}


V1_KINDS = sorted(KINDS)
V2_KINDS = sorted([*KINDS, TEXT_ONLY])


def _one_of(media_type: str, kinds: list[str]) -> str:
    if media_type not in kinds:
        raise ValueError(f"media_type must be one of {', '.join(kinds)}")
    return media_type


def _check_one_media(media_uri: str | None, media_b64: str | None) -> None:
    if (media_uri is None) == (media_b64 is None):
        raise ValueError("exactly one of media_uri and media_b64 must be set")


def _check_time(created_at: datetime) -> None:
    if created_at.tzinfo is None:
        raise ValueError("created_at must carry a timezone (ISO-8601 with offset or Z)")


class _Upload(_Record):
    """What both upload versions carry, with the same bounds."""

    item_id: str = Field(pattern=ITEM_ID_PATTERN)
    owner_id: str = Field(min_length=1, max_length=128)
    media_uri: str | None = Field(default=None, max_length=2048)
    media_b64: str | None = None
    text: str = Field(default="", max_length=5000)
    created_at: datetime

    def inline_bytes(self) -> bytes:
        return inline_bytes(self.media_b64)


class UploadV1(_Upload):
    """A new upload on ``media.uploads`` (key = item_id). Exactly one of media_uri / media_b64."""

    schema_version: Literal[1] = 1
    media_type: str = Field(json_schema_extra=_enum(V1_KINDS))  # a kind of mmfeat.media.KINDS

    @field_validator("media_type")
    @classmethod
    def _known_kind(cls, media_type: str) -> str:
        return _one_of(media_type, V1_KINDS)

    @model_validator(mode="after")
    def _one_media_source(self) -> UploadV1:
        _check_one_media(self.media_uri, self.media_b64)
        _check_time(self.created_at)
        return self

    def post_text(self) -> str:
        """The post's own words (version 1 has only ``text``)."""
        return self.text


def inline_bytes(media_b64: str | None) -> bytes:
    """The decoded inline media; a SchemaError if it is not valid base64."""
    assert media_b64 is not None
    try:
        return base64.b64decode(media_b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SchemaError("media_b64 is not valid base64") from e


class UploadV2(_Upload):
    """A new upload, version 2: any media kind, and the post's own words (title, text, tags).

    ``media_type: "text"`` is a post without media (neither media_uri nor media_b64, and some words);
    every other kind carries exactly one of media_uri / media_b64, as in version 1."""

    schema_version: Literal[2]
    media_type: str = Field(json_schema_extra=_enum(V2_KINDS))  # a kind of mmfeat.media.KINDS, or "text"
    title: str = Field(default="", max_length=500)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=64)

    @field_validator("media_type")
    @classmethod
    def _known_kind(cls, media_type: str) -> str:
        return _one_of(media_type, V2_KINDS)

    @model_validator(mode="after")
    def _media_matches_kind(self) -> UploadV2:
        if self.media_type == TEXT_ONLY:
            if self.media_uri is not None or self.media_b64 is not None:
                raise ValueError('a media_type "text" post carries no media_uri or media_b64')
            if not self.post_text().strip():
                raise ValueError('a media_type "text" post needs a title, text or tags')
        else:
            _check_one_media(self.media_uri, self.media_b64)
        _check_time(self.created_at)
        return self

    def post_text(self) -> str:
        """The post's own words as one text: title, text, then the tags."""
        return "\n".join(part for part in (self.title, self.text, " ".join("#" + t.lstrip("#") for t in self.tags)) if part)


Upload = UploadV1 | UploadV2


def version_tag(value: Any) -> str:
    version = value.get("schema_version", 1) if isinstance(value, dict) else getattr(value, "schema_version", 1)
    return "v2" if version == 2 else "v1"


# schema_version picks the model (absent: 1); a version that is neither fails as version 1's literal
UPLOAD = TypeAdapter(Annotated[Annotated[UploadV1, Tag("v1")] | Annotated[UploadV2, Tag("v2")], Discriminator(version_tag)])


def parse_upload(raw: bytes) -> Upload:
    """Validate a raw upload value of either version; raise SchemaError with a one-line reason."""
    return validate_json(UPLOAD, raw)
