"""Every public topic's record schema as JSON Schema, generated from the models (docs/schemas/).

Downstream consumers in other languages validate records with these files; `mmfeat schemas --write`
regenerates them and a unit test fails when a committed file no longer matches its model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from mmfeat.engagements import EngagementV1
from mmfeat.schemas.items import FEATURE_RECORD
from mmfeat.schemas.records import DeferredRecordV1, DlqRecordV1, UnmatchedEngagementV1, UserProfileV1
from mmfeat.schemas.uploads import UPLOAD
from mmfeat.settings import Topics

# file stem -> (the Topics setting naming its topic, the schema: a model or a versioned union)
PUBLISHED: dict[str, tuple[str, Any]] = {
    "upload": ("uploads_topic", UPLOAD),
    "feature-record": ("features_topic", FEATURE_RECORD),
    "deferred-upload": ("deferred_topic", DeferredRecordV1),
    "dead-letter": ("dlq_topic", DlqRecordV1),
    "engagement": ("engagements_topic", EngagementV1),
    "engagement-dead-letter": ("engagements_dlq_topic", DlqRecordV1),
    "user-profile": ("profiles_topic", UserProfileV1),
    "unmatched-engagement": ("unmatched_topic", UnmatchedEngagementV1),
}


def json_schema(stem: str) -> dict[str, Any]:
    """The JSON Schema of one published record kind, titled and named after its default topic."""
    setting, model = PUBLISHED[stem]
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema: dict[str, Any] = adapter.json_schema(mode="validation")
    topic = Topics.model_fields[setting].default
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://mmfeat.dev/schemas/{stem}.json",
        "title": schema.pop("title", stem),
        "description": f"Record values on {topic} (setting MMFEAT_{setting.upper()}); generated from mmfeat's models.",
        **schema,
    }


def render(stem: str) -> str:
    return json.dumps(json_schema(stem), indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in PUBLISHED:
        path = out_dir / f"{stem}.json"
        path.write_text(render(stem))
        paths.append(path)
    return paths
