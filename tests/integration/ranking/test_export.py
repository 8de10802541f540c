"""`mmfeat export-training-data` on the real broker: one row per valid engagement with features, item tokens
as published, and point-in-time profiles equal to a recomputation from strictly earlier engagements."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmfeat.cli.produce import engagement_records, send_records
from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import OutRecord
from mmfeat.profile import build_profiles, features_at
from mmfeat.settings import Settings
from streams.offline import valid_engagements
from streams.rules import profile_config
from tests.integration.conftest import records, run_cli

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_export_joins_items_and_point_in_time_profiles(ps: Settings, tmp_path: Path) -> None:
    items = {f"it-{i}": [2 + i, 10 + i % 3] for i in range(6)}
    send_records(
        ps,
        [
            OutRecord(ps.topics.features_topic, k, json.dumps({"item_id": k, "token_ids": {"word": v, "sp": v}}).encode())
            for k, v in items.items()
        ],
    )
    evs = [
        EngagementV1(
            user_id=f"u{i % 3}",
            item_id=f"it-{i % 7}",
            event=("like", "view", "share")[i % 3],
            ts=START + timedelta(minutes=i),
            event_id=f"e{i}",
        )
        for i in range(40)  # it-6 has no features: its engagements are left out
    ]
    send_records(ps, engagement_records(ps, evs))
    send_records(ps, [OutRecord(ps.topics.engagements_topic, "u0", b"{broken")])
    out = tmp_path / "train.parquet"
    done = run_cli(ps, "export-training-data", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with_features = [e for e in evs if e.item_id in items]
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert f"{len(with_features)} rows" in said and f"{len(evs) - len(with_features)} engagement(s) left out" in said

    rows = pq.read_table(out).to_pylist()
    assert [r["engagement_id"] for r in rows] == [e.event_id for e in with_features]  # event-time order, DLQ'd record absent
    assert all(r["item_word_ids"] == items[r["item_id"]] for r in rows)
    cfg = profile_config(ps)
    log = valid_engagements(records(ps, ps.topics.engagements_topic), ps)
    for r in rows[::7]:
        t = r["ts"].timestamp()
        before = build_profiles([e for e in log if e.ts < t and e.user_id == r["user_id"]], items, cfg)
        want = features_at(before.get(r["user_id"]), cfg, t)
        for ev in ("like", "view", "share"):
            ids, weights = want.get(ev, ([], []))
            assert r[f"profile_{ev}_ids"] == ids
            assert r[f"profile_{ev}_weights"] == pytest.approx(weights)
    first = rows[0]
    assert first["profile_like_ids"] == [] and first["profile_view_ids"] == []  # nothing before the first engagement


def test_profiles_of_semantic_id_prefixes_are_exported_with_the_code_lists(ps: Settings, tmp_path: Path) -> None:
    """MMFEAT_PROFILE_TOKENIZER=sid_prefix: the exporter's profile columns aggregate prefix tokens, next to the
    items' code and prefix lists as published."""
    s = ps.updated({"profile_tokenizer": "sid_prefix"})
    codes = {f"it-{i}": [i % 2, 64 + i % 3, 128 + i] for i in range(5)}
    prefixes = {f"it-{i}": [i % 2, 64 + 3 * (i % 2) + i % 3, 4160 + i] for i in range(5)}  # items share coarse prefixes
    values = {k: json.dumps({"item_id": k, "token_ids": {"sid": codes[k], "sid_prefix": prefixes[k]}}).encode() for k in codes}
    send_records(s, [OutRecord(s.topics.features_topic, k, v) for k, v in values.items()])
    evs = [
        EngagementV1(user_id=f"u{i % 2}", item_id=f"it-{i % 5}", event="like", ts=START + timedelta(minutes=i), event_id=f"s{i}")
        for i in range(20)
    ]
    send_records(s, engagement_records(s, evs))
    out = tmp_path / "sid.parquet"
    done = run_cli(s, "export-training-data", "--out", str(out), "--tokenizers", "sid,sid_prefix")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.schema.metadata[b"mmfeat.profile_tokenizer"] == b"sid_prefix"
    rows = table.to_pylist()
    assert len(rows) == len(evs)
    assert all(r["item_sid_ids"] == codes[r["item_id"]] and r["item_sid_prefix_ids"] == prefixes[r["item_id"]] for r in rows)
    cfg = profile_config(s)
    log = valid_engagements(records(s, s.topics.engagements_topic), s)
    for r in rows[1::5]:
        t = r["ts"].timestamp()
        before = build_profiles([e for e in log if e.ts < t and e.user_id == r["user_id"]], prefixes, cfg)
        ids, weights = features_at(before.get(r["user_id"]), cfg, t).get("like", ([], []))
        assert r["profile_like_ids"] == ids and set(ids) <= {p for v in prefixes.values() for p in v}
        assert r["profile_like_weights"] == pytest.approx(weights)
    assert rows[-1]["profile_like_ids"]  # a profile of prefix tokens, not empty


def test_version_2_records_export_each_source_and_profiles_follow_the_sources_setting(ps: Settings, tmp_path: Path) -> None:
    s = ps.updated({"profile_sources": ["caption", "post_text"]})
    caption = {f"v2-{i}": [3 + i] for i in range(4)}
    post = {f"v2-{i}": [40 + i, 50] for i in range(4)}

    def record(k: str) -> bytes:
        sources = {"caption": {"text": "c", "raw": "c", "token_ids": {"word": caption[k]}},
                   "post_text": {"text": "p", "raw": "p", "token_ids": {"word": post[k]}}}  # fmt: skip
        return json.dumps({"schema_version": 2, "item_id": k, "sources": sources, "model_versions": {"captioner": "c@1"},
                           "tokenizer_versions": {"word": "w@1"}}).encode()  # fmt: skip

    send_records(s, [OutRecord(s.topics.features_topic, k, record(k)) for k in caption])
    evs = [
        EngagementV1(user_id="u9", item_id=f"v2-{i % 4}", event="like", ts=START + timedelta(minutes=i), event_id=f"v{i}") for i in range(8)
    ]
    send_records(s, engagement_records(s, evs))
    out = tmp_path / "v2.parquet"
    done = run_cli(s, "export-training-data", "--out", str(out), "--tokenizers", "word")
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out).to_pylist()
    assert [r["item_word_ids"] for r in rows] == [caption[e.item_id] for e in evs]  # the caption's, as version 1's token_ids
    assert [r["item_post_text_word_ids"] for r in rows] == [post[e.item_id] for e in evs]
    # the profile aggregates both sources' ids: by the last row it has seen every item's caption and post ids
    assert {3, 4, 5, 40, 41, 42, 50} <= set(rows[-1]["profile_like_ids"])
    assert pq.read_schema(out).metadata[b"mmfeat.profile_sources"] == b"caption,post_text"
