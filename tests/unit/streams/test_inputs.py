"""The profiles app's parsing boundary: random and mutated engagements, feature records and internal messages
either parse or raise SchemaError (a DLQ reason), never anything else; what parses can always be published."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS, DEFAULT_MAX_VALUES, Engagement, EngagementRules
from mmfeat.errors import SchemaError
from mmfeat.features import item_features
from mmfeat.profile import ProfileConfig, apply_engagement, profile_record
from mmfeat.schemas import UserProfileV1, encode_record
from streams.records import EngagementsMsg, FeaturesMsg, encode, read_by_user

RULES = EngagementRules(DEFAULT_EVENT_WEIGHTS, DEFAULT_MAX_VALUES, 300.0)
CFG = ProfileConfig(event_weights=DEFAULT_EVENT_WEIGHTS)
T0 = 1_790_000_000.0
GOOD_E = {"user_id": "u1", "item_id": "it-1", "event": "time_spent", "value": 30, "ts": "2026-09-21T14:00:00Z"}
GOOD_F = {"item_id": "it-1", "token_ids": {"word": [3, 4, 5]}, "captioner_version": "c@1", "tokenizer_versions": {"word": "w@1"}}
HOSTILE = [
    b'"\\ud800"', b"[" * 300 + b"]" * 300, b"1e308", b"1e999", b"-1", b"10000000000000000000000", b"true", b"null", b"NaN",
    b'"\\u001b]0;x\\u0007"', b"[1, true]", b'["a"]', b"[-5]", b"{}", b"[]", b'{"word": "w"}', b'[["w"]]',
]  # fmt: skip


def parse(raw: bytes | None) -> object:
    return RULES.parse(raw, topic="engagements", partition=0, offset=1, timestamp_s=T0)


@st.composite
def mutated(draw: st.DrawFn, good: dict[str, object]) -> bytes | None:
    kind = draw(st.sampled_from(["field", "bytes", "random", "none"]))
    if kind == "none":
        return None
    if kind == "random":
        return draw(st.binary(max_size=200))
    raw = json.dumps(good).encode()
    if kind == "field":
        paths = [*good, "token_ids.word", "tokenizer_versions.word", "extra"]
        field = draw(st.sampled_from(paths))
        obj = json.loads(raw)
        head, _, tail = field.partition(".")
        if tail and isinstance(obj.get(head), dict):
            obj[head][tail] = "__X__"
        else:
            obj[head] = "__X__"
        return json.dumps(obj).encode().replace(b'"__X__"', draw(st.sampled_from(HOSTILE)))
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if draw(st.booleans()) and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at:at] = draw(st.sampled_from(HOSTILE))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated(GOOD_E))
def test_engagements_parse_or_are_refused_and_what_parses_publishes(raw: bytes | None) -> None:
    try:
        e = parse(raw)
    except SchemaError as err:
        assert err.reason in {"bad_json", "missing_id", "schema", "unknown_event", "bad_value", "future_ts"}
        assert "\n" not in str(err)
        return
    assert isinstance(e, Engagement)
    state, _ = apply_engagement(None, e, [3, 4], CFG)
    for i in range(50):  # the same value many times over: weights stay finite (values are bounded)
        state, _ = apply_engagement(state, replace(e, id=f"{e.id}-{i}"), [3], CFG)
    rec = profile_record(state, CFG, tokenizer="word", features_topic="f")
    assert UserProfileV1.model_validate_json(encode_record(rec)) == rec
    assert all(math.isfinite(w) for p in rec.events.values() for w in p.weights)


@settings(max_examples=300, deadline=None)
@given(mutated(GOOD_F))
def test_feature_records_give_valid_token_ids_or_are_refused(raw: bytes | None) -> None:
    try:
        ids, lineage = item_features(raw or b"", "word")
    except SchemaError as err:
        assert err.reason in {"bad_features", "bad_json"}
        return
    assert all(type(t) is int and 0 <= t < 2**31 for t in ids)
    assert lineage is None or isinstance(lineage, str)


GOOD_BATCH = {"kind": "engagements", "entries": [["e1", "u1", "it-1", "like", 1.0, 5.0, 0, 7]]}
GOOD_FEATURES = {"kind": "features", "items": [["it-1", [3, 4], "captioner=c word=w"], ["it-2", None, None]]}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated(GOOD_BATCH), mutated(GOOD_FEATURES), mutated({"kind": "tick"})))
def test_internal_messages_parse_or_are_refused(raw: bytes | None) -> None:
    with contextlib.suppress(SchemaError):  # refused with a reason is fine; any other exception fails the test
        msg = read_by_user(raw)
        if isinstance(msg, EngagementsMsg):  # what parses is a batch the stage can take as it is
            assert all(e.partition is not None and e.offset is not None and e.value >= 0 for e in msg.engagements())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({**GOOD_E, "value": 1e308}, "bad_value"),
        ({**GOOD_E, "event": "like", "value": 1001}, "bad_value"),
        ({**GOOD_E, "user_id": "u\ud800"}, "bad_json"),  # a lone surrogate is not valid JSON text
    ],
)
def test_engagement_values_are_bounded_per_event_type(value: dict[str, object], reason: str) -> None:
    with pytest.raises(SchemaError) as e:
        parse(json.dumps(value).encode())
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "tokens",
    [[True, 3], [-1], [10**22], {"word": "x"}, "abc"],
)
def test_token_ids_must_be_int32_ids(tokens: object) -> None:
    with pytest.raises(SchemaError) as e:
        item_features(json.dumps({**GOOD_F, "token_ids": {"word": tokens}}).encode(), "word")
    assert e.value.reason == "bad_features"


def test_tokenizer_versions_that_are_a_list_are_refused() -> None:
    with pytest.raises(SchemaError):
        item_features(json.dumps({**GOOD_F, "tokenizer_versions": ["w@1"]}).encode(), "word")


def test_internal_messages_round_trip() -> None:
    e = Engagement(id="e1", user_id="u", item_id="i", event="like", value=1.0, ts=5.0, partition=2, offset=9)
    msg = EngagementsMsg.of([e])
    assert read_by_user(encode(msg)) == msg and msg.engagements() == [e]
    features = FeaturesMsg(items=[("i", [1, 2], None)])
    assert read_by_user(encode(features)) == features
    with pytest.raises(SchemaError):
        read_by_user(b'{"kind": "engagement"}')
    with pytest.raises(SchemaError):  # ids are checked on internal topics too
        read_by_user(json.dumps({"kind": "engagements", "entries": [["e", "u\n", "i", "like", 1.0, 5.0, 0, 1]]}).encode())
