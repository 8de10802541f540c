"""The JSON Schemas under docs/schemas/ are what the models generate, and they accept what the models accept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from mmfeat.features import FeatureBuilder
from mmfeat.schemas import UploadV1, UploadV2, encode_record
from mmfeat.schemas.published import PUBLISHED, render
from mmfeat.settings import Features
from mmfeat.triton_contract import Caption

DOCS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


@pytest.mark.parametrize("stem", sorted(PUBLISHED))
def test_committed_schema_matches_the_model(stem: str) -> None:
    committed = (DOCS / f"{stem}.json").read_text()
    assert committed == render(stem), f"docs/schemas/{stem}.json is stale: run `mmfeat schemas --write docs/schemas`"
    jsonschema.Draft202012Validator.check_schema(json.loads(committed))


def test_every_committed_schema_file_is_published() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.json")) == sorted(PUBLISHED)


def _validator(stem: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((DOCS / f"{stem}.json").read_text()), format_checker=jsonschema.FormatChecker())


def test_records_the_models_write_validate_against_the_published_schemas() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    v1 = UploadV1(item_id="it-1", owner_id="o", media_type="image", media_b64="eA==", text="hi", created_at=at)
    v2 = UploadV2(schema_version=2, item_id="it-2", owner_id="o", media_type="text", title="Sunday market", tags=["food"], created_at=at)
    uploads = _validator("upload")
    for up in (v1, v2):
        uploads.validate(json.loads(encode_record(up)))
    builder = FeatureBuilder.of(Features(tokenizers=["word", "hash"]))
    features = _validator("feature-record")
    for schema in (1, 2):
        builder.schema = schema
        record = builder.build(v1, Caption("a red apple on a table", [5, 6]), "cap-1", "sha")
        features.validate(json.loads(encode_record(record)))


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 3},
        {"media_type": "hologram"},
        {"tags": ["x" * 65]},
        {"extra_field": 1},
    ],
)
def test_the_published_upload_schema_refuses_what_the_model_refuses(change: dict[str, object]) -> None:
    value = {
        "schema_version": 2,
        "item_id": "it-2",
        "owner_id": "o",
        "media_type": "text",
        "title": "t",
        "created_at": "2026-05-01T00:00:00Z",
    }
    uploads = _validator("upload")
    uploads.validate(value)
    with pytest.raises(jsonschema.ValidationError):
        uploads.validate({**value, **change})
