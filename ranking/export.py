"""`mmfeat export-training-data`: the engagement log joined with item features and point-in-time user
profiles, read from the Kafka topics, written as Parquet for users' own rankers.

One row per valid engagement (the ones the profiles app accepts), in event-time order. The profile
columns hold the user's profile from engagements strictly before the row's own, built with the same
functions as the live app (mmfeat/profile.py), weights decayed to the row's time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmfeat.features import POST_TEXT
from mmfeat.kafka.reader import read_topic
from mmfeat.profile import ProfileTimeline, features_at
from mmfeat.settings import Settings
from mmfeat.tokenizers import ranked
from streams.offline import item_tokens, valid_engagements
from streams.rules import profile_config


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    without_features: int  # engagements whose item has no feature record (left out: nothing to join)
    path: Path


def export_training_data(
    settings: Settings, out: Path, *, tokenizers: tuple[str, ...] = ranked(), progress: Callable[[int], None] | None = None
) -> ExportSummary:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = profile_config(settings)
    events = sorted(cfg.event_weights)
    engagements = sorted(
        valid_engagements(read_topic(settings, settings.topics.engagements_topic, timeout_s=5), settings), key=lambda e: e.ts
    )
    features = list(read_topic(settings, settings.topics.features_topic, timeout_s=5))
    prof = settings.profiles
    tokens = {tok: item_tokens(features, tok) for tok in tokenizers}  # the caption's (a v1 record's only source)
    post = {tok: item_tokens(features, tok, sources=(POST_TEXT,)) for tok in tokenizers}
    profile_tokens = item_tokens(features, prof.profile_tokenizer, sources=prof.profile_sources)
    timeline = ProfileTimeline([(e, profile_tokens[e.item_id]) for e in engagements if e.item_id in profile_tokens], cfg)
    cols: dict[str, list[Any]] = {k: [] for k in ("engagement_id", "user_id", "item_id", "event", "value", "ts")}
    for tok in tokenizers:
        cols[f"item_{tok}_ids"], cols[f"item_post_text_{tok}_ids"] = [], []
    for ev in events:
        cols[f"profile_{ev}_ids"], cols[f"profile_{ev}_weights"] = [], []
    missing = 0
    for n, e in enumerate(engagements, 1):
        if e.item_id not in profile_tokens:
            missing += 1
            continue
        feats = features_at(timeline.before(e.user_id, e.ts), cfg, e.ts)
        for k, v in (("engagement_id", e.id), ("user_id", e.user_id), ("item_id", e.item_id), ("event", e.event), ("value", e.value)):
            cols[k].append(v)
        cols["ts"].append(datetime.fromtimestamp(e.ts, UTC))
        for tok in tokenizers:
            cols[f"item_{tok}_ids"].append(tokens[tok].get(e.item_id, []))
            cols[f"item_post_text_{tok}_ids"].append(post[tok].get(e.item_id, []))
        for ev in events:
            ids, weights = feats.get(ev, ([], []))
            cols[f"profile_{ev}_ids"].append(ids)
            cols[f"profile_{ev}_weights"].append(weights)
        if progress and n % 1000 == 0:
            progress(n)
    types = {"value": pa.float64(), "ts": pa.timestamp("us", tz="UTC")}
    types.update({k: pa.list_(pa.int64()) for k in cols if k.endswith("_ids")})
    types.update({k: pa.list_(pa.float64()) for k in cols if k.endswith("_weights")})
    table = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})
    table = table.replace_schema_metadata({
        "mmfeat.features_topic": settings.topics.features_topic, "mmfeat.profile_tokenizer": prof.profile_tokenizer,
        "mmfeat.profile_sources": ",".join(prof.profile_sources),
        "mmfeat.half_life_s": str(cfg.half_life_s), "mmfeat.top_k": str(cfg.top_k),
    })  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return ExportSummary(rows=table.num_rows, without_features=missing, path=out)
