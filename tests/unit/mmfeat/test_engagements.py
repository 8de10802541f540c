"""Engagement validation: every kind of bad record is refused with its own reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS, parse_engagement
from mmfeat.errors import SchemaError

T0 = 1_790_000_000.0  # the record's Kafka timestamp
GOOD = {"user_id": "u1", "item_id": "it-1", "event": "like", "value": 1, "ts": "2026-09-21T14:00:00Z"}


def parse(value: Any) -> Any:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return parse_engagement(
        raw, topic="engagements", partition=2, offset=17, timestamp_s=T0, event_weights=DEFAULT_EVENT_WEIGHTS, max_future_s=300
    )


def test_a_good_engagement_gets_its_coordinates_as_id_unless_it_has_an_event_id() -> None:
    e = parse(GOOD)
    assert (e.id, e.user_id, e.item_id, e.event, e.value) == ("engagements[2]@17", "u1", "it-1", "like", 1.0)
    assert parse({**GOOD, "event_id": "click-9"}).id == "click-9"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "bad_json"),
        ({k: v for k, v in GOOD.items() if k != "user_id"}, "missing_id"),
        ({k: v for k, v in GOOD.items() if k != "item_id"}, "missing_id"),
        ({**GOOD, "user_id": ""}, "schema"),
        ({**GOOD, "event": "poke"}, "unknown_event"),
        ({**GOOD, "value": -1}, "bad_value"),
        (b'{"user_id": "u1", "item_id": "it-1", "event": "like", "value": NaN, "ts": "2026-09-21T14:00:00Z"}', "bad_value"),
        ({**GOOD, "value": "1"}, "bad_value"),
        ({**GOOD, "ts": "2030-01-01T00:00:00Z"}, "future_ts"),
        ({**GOOD, "ts": "2026-09-21T14:00:00"}, "schema"),
        ({**GOOD, "extra": 1}, "schema"),
        (None, "schema"),
    ],
)
def test_bad_engagements_are_refused_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        if value is None:
            parse_engagement(None, topic="e", partition=0, offset=0, timestamp_s=T0, event_weights=DEFAULT_EVENT_WEIGHTS, max_future_s=300)
        else:
            parse(value)
    assert info.value.reason == reason, str(info.value)
    assert "\n" not in str(info.value)
