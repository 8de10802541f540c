"""The typed messages the profiles app's agents exchange on its internal topics (``<app>-by-item``,
``<app>-by-user``). Internal topics are read as raw bytes and validated like any input: a record on
them that is not one of these reaches the DLQ, like a bad engagement."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mmfeat.engagements import Engagement
from mmfeat.errors import SchemaError
from mmfeat.schemas import ITEM_ID_PATTERN, TokenIds, encode_record, first_error, validate_json
from mmfeat.untrusted import clean


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EngagementData(_Msg):
    """A validated engagement (mmfeat.engagements.Engagement) as it travels between agents."""

    id: str = Field(min_length=1, max_length=300)
    user_id: str = Field(pattern=ITEM_ID_PATTERN)
    item_id: str = Field(pattern=ITEM_ID_PATTERN)
    event: str = Field(min_length=1, max_length=64)
    value: float = Field(ge=0)
    ts: float

    @classmethod
    def of(cls, e: Engagement) -> EngagementData:
        return cls(id=e.id, user_id=e.user_id, item_id=e.item_id, event=e.event, value=e.value, ts=e.ts)

    def engagement(self) -> Engagement:
        return Engagement(id=self.id, user_id=self.user_id, item_id=self.item_id, event=self.event, value=self.value, ts=self.ts)


class EngagementMsg(_Msg):
    kind: Literal["engagement"] = "engagement"
    e: EngagementData


class FeaturesMsg(_Msg):
    kind: Literal["features"] = "features"
    item_id: str = Field(min_length=1, max_length=300)
    tokens: TokenIds
    lineage: str | None = None


class DeletedMsg(_Msg):
    kind: Literal["deleted"] = "deleted"
    item_id: str = Field(min_length=1, max_length=300)


class TickMsg(_Msg):
    kind: Literal["tick"] = "tick"


ByItem = Annotated[EngagementMsg | FeaturesMsg | DeletedMsg | TickMsg, Field(discriminator="kind")]
_BY_ITEM: TypeAdapter[EngagementMsg | FeaturesMsg | DeletedMsg | TickMsg] = TypeAdapter(ByItem)


class ByUserMsg(_Msg):
    """An engagement joined with its item's tokens, on its way to the user's profile."""

    e: EngagementData
    tokens: TokenIds
    lineage: str | None = None


def encode(msg: _Msg) -> bytes:
    return encode_record(msg)


def read_by_item(raw: bytes | None) -> EngagementMsg | FeaturesMsg | DeletedMsg | TickMsg:
    if raw is None:
        raise SchemaError("empty value on the by-item topic")
    try:
        return _BY_ITEM.validate_json(raw)
    except ValidationError as e:
        raise SchemaError(f"not a by-item message: {clean(first_error(e), 300)}") from e


def read_by_user(raw: bytes | None) -> ByUserMsg:
    if raw is None:
        raise SchemaError("empty value on the by-user topic")
    return validate_json(ByUserMsg, raw)
