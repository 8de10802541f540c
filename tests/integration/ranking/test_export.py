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
