"""The typed messages on the profiles app's internal topic ``<app>-by-user``, one partition per user partition.

Every record carries a batch: the ingesting agent sends, per micro-batch of engagements, one message per user
partition; the features agent broadcasts each batch of item features to every partition; a timer sends ticks.
The topic is read as raw bytes and validated like any input: a record on it that is not one of these
reaches the DLQ, like a bad engagement.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mmfeat.engagements import Engagement
from mmfeat.errors import SchemaError
from mmfeat.schemas import ITEM_ID_PATTERN, TokenIds, encode_record, first_error
from mmfeat.untrusted import clean
from streams.state import ItemTokens

Id = Annotated[str, Field(pattern=ITEM_ID_PATTERN)]
EngagementId = Annotated[str, Field(min_length=1, max_length=300)]
Event = Annotated[str, Field(min_length=1, max_length=64)]
# id, user, item, event, value, ts, source partition, source offset: an array, not an object, to keep a batch small
Entry = tuple[EngagementId, Id, Id, Event, Annotated[float, Field(ge=0)], float, Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EngagementsMsg(_Msg):
    kind: Literal["engagements"] = "engagements"
    entries: list[Entry]

    @classmethod
    def of(cls, engagements: list[Engagement]) -> EngagementsMsg:
        return cls(entries=[entry(e) for e in engagements])

    def engagements(self) -> list[Engagement]:
        return [
            Engagement(id=i, user_id=u, item_id=it, event=ev, value=v, ts=ts, partition=p, offset=o)
            for i, u, it, ev, v, ts, p, o in self.entries
        ]


class FeaturesMsg(_Msg):
    """Item features as the profiles read them: the profile tokenizer's ids and the lineage; no ids: a tombstone."""

    kind: Literal["features"] = "features"
    items: list[tuple[Annotated[str, Field(min_length=1, max_length=300)], TokenIds | None, str | None]]

    def updates(self) -> list[tuple[str, ItemTokens | None]]:
        return [(item, None if tokens is None else ItemTokens(list(tokens), lineage)) for item, tokens, lineage in self.items]


class TickMsg(_Msg):
    kind: Literal["tick"] = "tick"


ByUserMsg = EngagementsMsg | FeaturesMsg | TickMsg
ByUser = Annotated[ByUserMsg, Field(discriminator="kind")]
_BY_USER: TypeAdapter[ByUserMsg] = TypeAdapter(ByUser)


def entry(e: Engagement) -> Entry:
    assert e.partition is not None and e.offset is not None, "engagements on by-user carry their source coordinates"
    return (e.id, e.user_id, e.item_id, e.event, e.value, e.ts, e.partition, e.offset)


def encode(msg: _Msg) -> bytes:
    return encode_record(msg)


def read_by_user(raw: bytes | None) -> ByUserMsg:
    if raw is None:
        raise SchemaError("empty value on the by-user topic")
    try:
        return _BY_USER.validate_json(raw)
    except ValidationError as e:
        raise SchemaError(f"not a by-user message: {clean(first_error(e), 300)}") from e


class UserPartitions:
    """user id -> its partition of by-user, as Faust's table routing computes it (murmur2 of the key bytes, as
    the Java client's default partitioner), so a lookup sent to any worker finds the owner. Memoized."""

    def __init__(self, partitions: int, memo: int = 200_000) -> None:
        self.partitions, self.memo = partitions, memo
        self._of: dict[str, int] = {}

    def __call__(self, user_id: str) -> int:
        got = self._of.get(user_id)
        if got is None:
            if len(self._of) >= self.memo:
                self._of.clear()
            got = self._of[user_id] = (murmur2(user_id.encode()) & 0x7FFFFFFF) % self.partitions
        return got
