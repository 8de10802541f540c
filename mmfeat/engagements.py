"""Engagement records (``engagements`` topic, key = user_id): the contract and its validation.

Parsing is pure (the clock is an argument) so the Faust agent, the offline evaluation and the
tests reject exactly the same records for exactly the same reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from mmfeat.errors import SchemaError
from mmfeat.schemas import ITEM_ID_PATTERN, _Record, validate_json

DEFAULT_EVENT_WEIGHTS = {"like": 1.0, "comment": 2.0, "share": 3.0, "view": 0.25, "time_spent": 0.02}
# The largest ``value`` accepted per event type: counts of one action, and a day for time_spent (seconds).
DEFAULT_MAX_VALUE = 1000.0
DEFAULT_MAX_VALUES = {"like": 1000.0, "comment": 1000.0, "share": 1000.0, "view": 1000.0, "time_spent": 86400.0}


class EngagementV1(_Record):
    """One engagement on ``engagements``. ``value`` is 1 for a like, seconds for time_spent."""

    schema_version: Literal[1] = 1
    user_id: str = Field(pattern=ITEM_ID_PATTERN)
    item_id: str = Field(pattern=ITEM_ID_PATTERN)
    event: str = Field(min_length=1, max_length=64)
    value: float = 1.0
    ts: datetime
    event_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _aware(self) -> EngagementV1:
        if self.ts.tzinfo is None:
            raise ValueError("ts must carry a timezone (ISO-8601 with offset or Z)")
        return self


@dataclass(frozen=True)
class Engagement:
    """A validated engagement as the pipeline carries it: event time in epoch seconds and a stable id.

    ``id`` is the record's ``event_id`` when it has one, else its source coordinates
    (``engagements[p]@offset``), which are the same on every redelivery: the key of idempotence.
    """

    id: str
    user_id: str
    item_id: str
    event: str
    value: float
    ts: float
    partition: int | None = None  # source coordinates on the engagements topic: what a redelivery is recognized by
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Engagement:
        p, o = d.get("partition"), d.get("offset")
        return cls(
            id=str(d["id"]), user_id=str(d["user_id"]), item_id=str(d["item_id"]), event=str(d["event"]), value=float(d["value"]),
            ts=float(d["ts"]), partition=None if p is None else int(p), offset=None if o is None else int(o),
        )  # fmt: skip


def _reason(where: str, kind: str) -> str:
    if kind == "missing" and where in ("user_id", "item_id"):
        return "missing_id"
    return "bad_value" if where == "value" else "schema"


def source_id(topic: str, partition: int, offset: int) -> str:
    """The id of an engagement that carries no event_id: its coordinates, stable across redeliveries."""
    return f"{topic}[{partition}]@{offset}"


def parse_engagement(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_s: float,
    event_weights: Mapping[str, float],
    max_future_s: float,
    max_values: Mapping[str, float] = DEFAULT_MAX_VALUES,
) -> Engagement:
    """Validate one raw engagement record; raise SchemaError with a stable reason and a one-line message.

    "The future" is measured from the record's Kafka timestamp, not the clock, so a replay of the
    topic accepts and rejects exactly what the live app did.

    ``max_values`` bounds ``value`` per event type (``DEFAULT_MAX_VALUE`` for types it does not name), so no
    weight can overflow however many engagements a profile sums.

    Reasons: ``bad_json``, ``missing_id``, ``schema``, ``unknown_event``, ``bad_value``, ``future_ts``.
    """
    if raw is None:
        raise SchemaError("empty value (tombstone) on the engagements topic", reason="schema")
    rec = validate_json(EngagementV1, raw, _reason)
    if rec.event not in event_weights:
        known = ", ".join(sorted(event_weights))
        raise SchemaError(f"unknown event type {rec.event!r} (known: {known})", reason="unknown_event")
    if not math.isfinite(rec.value) or rec.value < 0:
        raise SchemaError(f"value must be a finite number >= 0, got {rec.value}", reason="bad_value")
    limit = max_values.get(rec.event, DEFAULT_MAX_VALUE)
    if rec.value > limit:
        raise SchemaError(f"value {rec.value:g} of a {rec.event!r} is over its maximum {limit:g}", reason="bad_value")
    ts = rec.ts.timestamp()
    if ts > timestamp_s + max_future_s:
        ahead = ts - timestamp_s
        raise SchemaError(f"ts {rec.ts.isoformat()} is {ahead:.0f}s ahead of the record (limit {max_future_s:.0f}s)", reason="future_ts")
    return Engagement(
        id=rec.event_id or source_id(topic, partition, offset), user_id=rec.user_id, item_id=rec.item_id, event=rec.event,
        value=rec.value, ts=ts, partition=partition, offset=offset,
    )  # fmt: skip


@dataclass(frozen=True)
class EngagementRules:
    """What an engagement must satisfy, from the settings: the Faust app and the offline path parse through one of these."""

    event_weights: Mapping[str, float]
    max_values: Mapping[str, float]
    max_future_s: float

    def parse(self, raw: bytes | None, *, topic: str, partition: int, offset: int, timestamp_s: float) -> Engagement:
        return parse_engagement(
            raw, topic=topic, partition=partition, offset=offset, timestamp_s=timestamp_s,
            event_weights=self.event_weights, max_future_s=self.max_future_s, max_values=self.max_values,
        )  # fmt: skip
