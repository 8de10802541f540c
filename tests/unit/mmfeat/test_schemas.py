import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.errors import SchemaError
from mmfeat.schemas import parse_upload, peek_item_id

GOOD = {
    "item_id": "it-1",
    "owner_id": "u1",
    "media_type": "image",
    "media_b64": base64.b64encode(b"x").decode(),
    "created_at": "2026-11-26T10:00:00Z",
    "schema_version": 1,
}


def raw(**changes: object) -> bytes:
    rec = {**GOOD, **changes}
    return json.dumps({k: v for k, v in rec.items() if v is not ...}).encode()


def test_valid_upload() -> None:
    up = parse_upload(raw())
    assert up.item_id == "it-1" and up.inline_bytes() == b"x" and up.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (b"{not json", "bad_json", "not valid JSON"),
        (raw(owner_id=...), "schema", "owner_id: Field required"),
        (raw(item_id=123), "schema", "item_id: Input should be a valid string"),
        (raw(item_id="bad id with spaces"), "schema", "item_id: String should match pattern"),
        (raw(media_type="hologram"), "schema", "media_type"),
        (raw(media_uri="file:///x.png"), "schema", "exactly one of media_uri and media_b64"),
        (raw(media_b64=...), "schema", "exactly one of media_uri and media_b64"),
        (raw(created_at="2026-11-26T10:00:00"), "schema", "timezone"),
        (raw(created_at="yesterday"), "schema", "created_at"),
        (raw(schema_version=3), "schema", "schema_version"),
        (raw(colour="red"), "schema", "colour: Extra inputs are not permitted"),
        (b"[1, 2]", "schema", "record: Input should be an object"),
    ],
)
def test_invalid_uploads_name_the_problem(value: bytes, reason: str, message: str) -> None:
    with pytest.raises(SchemaError) as e:
        parse_upload(value)
    assert e.value.reason == reason
    assert message in str(e.value)


def test_bad_base64_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="base64"):
        parse_upload(raw(media_b64="!!!notbase64")).inline_bytes()


def test_peek_item_id_is_best_effort() -> None:
    assert peek_item_id(raw()) == "it-1"
    assert peek_item_id(b"{oops") is None
    assert peek_item_id(json.dumps({"item_id": 5}).encode()) is None
    assert peek_item_id(None) is None


V2 = {"schema_version": 2, "item_id": "p-1", "owner_id": "o", "media_type": "text", "title": "Sunday", "tags": ["Food"],
      "created_at": "2026-11-01T00:00:00Z"}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["schema_version", "media_type", "title", "text", "tags", "media_b64", "media_uri", "item_id", "x"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.lists(st.text(max_size=70), max_size=70),
        max_size=4,
    )
)
def test_any_version_2_upload_parses_or_is_one_schema_error(changes: dict[str, object]) -> None:
    raw = json.dumps({**V2, **changes}).encode()
    try:
        up = parse_upload(raw)
    except SchemaError as e:
        assert e.reason in ("schema", "bad_json") and "\n" not in str(e)
    else:
        assert up.schema_version in (1, 2) and (up.media_type != "text" or up.post_text().strip())
