"""The Faust profiles app on the real broker: profiles equal a recomputation from the engagement log by
the same pure function, after a normal run, after a SIGKILL and restart, and after a state wipe; late
features are applied; overflow and expiry are recorded; bad records reach the DLQ; the lookup answers."""

from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from mmfeat.cli.produce import engagement_records, send_records
from mmfeat.cli.services import free_port
from mmfeat.engagements import EngagementV1
from mmfeat.kafka.client import OutRecord, ensure_topics, topic_size
from mmfeat.schemas import DlqRecordV1, UnmatchedEngagementV1, UserProfileV1
from mmfeat.settings import Settings
from mmfeat.tokenizers import load_tokenizers
from mmfeat.topics import app_topics, internal_topics
from streams.offline import recompute_profiles
from streams.rules import profile_config
from tests.integration.conftest import records, run_cli, sample, scrape, start_cli, wait_for
from tests.integration.profiles import START, ProfilesApp, features, http_status, item_tokens, send_engagements, wait_converged


def test_profiles_equal_recomputation_late_features_applied_bad_records_to_dlq(ps: Settings, app: ProfilesApp) -> None:
    items = item_tokens(30)
    early = dict(list(items.items())[:20])
    late = dict(list(items.items())[20:])
    send_records(ps, features(ps, early))
    evs = send_engagements(ps, users=12, items=list(items), n=400, seed=1)
    assert any(e.item_id in late for e in evs)
    good = evs[0].model_dump(mode="json", exclude_none=True)
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "bad_json"),
        (json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(), "missing_id"),
        (json.dumps({**good, "event": "poke"}).encode(), "unknown_event"),
        (json.dumps({**good, "value": -3}).encode(), "bad_value"),
        (json.dumps({**good, "value": float("nan")}).encode(), "bad_value"),
        (json.dumps({**good, "ts": "2031-01-01T00:00:00Z"}).encode(), "future_ts"),
    ]
    send_records(ps, [OutRecord(ps.topics.engagements_topic, "u0", raw) for raw, _ in bad])
    app.start()

    # the early items' engagements are applied while the late ones wait for their features
    early_truth = recompute_profiles(ps, profile_config(ps))
    assert early_truth and all(p.applied > 0 for p in early_truth.values())
    wait_converged(app, early_truth, 120)
    send_records(ps, features(ps, late))
    truth = recompute_profiles(ps, profile_config(ps))
    assert sum(p.applied for p in truth.values()) == len(evs) > sum(p.applied for p in early_truth.values())
    wait_converged(app, truth, 120)

    dlq = [DlqRecordV1.model_validate_json(r.value or b"") for r in records(ps, ps.topics.engagements_dlq_topic)]
    assert Counter(d.reason for d in dlq) == Counter(reason for _, reason in bad)
    assert {d.source_offset for d in dlq} == {
        r.offset for r in records(ps, ps.topics.engagements_topic) if r.value in {raw for raw, _ in bad}
    }
    assert records(ps, ps.topics.unmatched_topic) == []

    # /metrics on the web port: inputs and outputs per topic, DLQ reasons, freshness on event time, lag
    def lag_sampled() -> bool:
        got = scrape(f"{app.url}/metrics")
        return all(sample(got, "mmfeat_consumer_lag", topic=ps.topics.engagements_topic, partition=str(p)) == 0 for p in range(2))

    wait_for(lag_sampled, 30, "consumer lag 0 on both engagement partitions")
    m = scrape(f"{app.url}/metrics")
    assert sample(m, "mmfeat_records_in_total", topic=ps.topics.engagements_topic) == len(evs) + len(bad)
    assert sample(m, "mmfeat_records_in_total", topic=ps.topics.features_topic) == len(items)
    for reason, n in Counter(reason for _, reason in bad).items():
        assert sample(m, "mmfeat_dlq_total", reason=reason) == n
    assert sample(m, "mmfeat_records_out_total", topic=ps.topics.engagements_dlq_topic) == len(bad)
    sent = sample(m, "mmfeat_records_out_total", topic=ps.topics.profiles_topic)
    assert sent is not None and sent >= len(evs)
    assert sample(m, "mmfeat_engagement_to_profile_seconds_count") == sent
    mean_age = (sample(m, "mmfeat_engagement_to_profile_seconds_sum") or 0) / sent
    now = datetime.now(UTC).timestamp()
    ts = [e.ts.timestamp() for e in evs]
    assert now - max(ts) - 5 <= mean_age <= now - min(ts) + 600  # event-time ages: these engagements are weeks old

    # the compacted topic carries the same profiles as the lookup
    latest = {r.key: UserProfileV1.model_validate_json(r.value or b"") for r in records(ps, ps.topics.profiles_topic)}
    assert {u: p.engagements for u, p in latest.items()} == {u: p.applied for u, p in truth.items()}
    assert http_status(f"{app.url}/profiles/nobody") == 404
    assert http_status(f"{app.url}/profiles/bad%20id") == 400

    # `mmfeat profile` prints the served profile with its heaviest tokens decoded back to words
    u0 = latest["u0"]
    top_event = max(u0.events, key=lambda ev: u0.events[ev].count)
    words = load_tokenizers(["word"], ps.features.tokenizer_dir, ps.features.hash_buckets)["word"].decode(
        u0.events[top_event].token_ids[:3]
    )
    shown = run_cli(ps, "profile", "u0", "--url", app.url)
    assert shown.returncode == 0, shown.stderr
    assert f"{u0.engagements} engagements" in shown.stdout and all(w in shown.stdout for w in words)
    missing = run_cli(ps, "profile", "nobody", "--url", app.url)
    assert missing.returncode == 1 and "unknown user" in missing.stderr and "Traceback" not in missing.stderr


def test_sigkill_mid_stream_then_restart_counts_every_engagement_once(ps: Settings, tmp_path: Path) -> None:
    # Offsets are committed every 30 s here, so everything done before the kill is redelivered after it:
    # the worst case for double counting, not a lucky timing.
    # One engagement per micro-batch: by-user then carries a record per engagement, which the last assertion counts.
    s = ps.updated({"profiles_commit_s": 30.0, "profiles_batch_max": 1})
    a = ProfilesApp(s, tmp_path / "profiles.log")
    items = item_tokens(40)
    send_records(s, features(s, items))
    n = 3000
    send_engagements(s, users=40, items=list(items), n=n, seed=2)
    truth = recompute_profiles(s, profile_config(s))
    assert sum(p.applied for p in truth.values()) == n
    a.start()
    try:
        wait_for(lambda: topic_size(s, s.topics.profiles_topic) >= 300, 120, "the first profile updates")
        a.stop(signal.SIGKILL)
        assert topic_size(s, s.topics.profiles_topic) < n, "the app finished before it could be killed; the test proves nothing"
        a.start()
        wait_converged(a, truth, 240)
        # engagements really reached the profile stage twice; the engagement-id set absorbed them
        assert topic_size(s, internal_topics(s)["by_user"]) > n
    finally:
        a.stop(signal.SIGKILL)


def test_state_wiped_then_recovered_from_changelog(ps: Settings, app: ProfilesApp) -> None:
    items = item_tokens(10)
    send_records(ps, features(ps, items))
    send_engagements(ps, users=8, items=list(items), n=300, seed=3)
    truth = recompute_profiles(ps, profile_config(ps))
    app.start()
    wait_converged(app, truth, 120)
    app.stop()
    assert ps.profiles.profiles_data_dir is not None and ps.profiles.profiles_data_dir.exists()
    shutil.rmtree(ps.profiles.profiles_data_dir)
    app.start()
    wait_converged(app, truth, 120)


def test_overflow_and_expiry_are_recorded_with_their_reason(ps: Settings, tmp_path: Path) -> None:
    s = ps.updated({"pending_max_per_item": 3, "pending_ttl_s": 2.0, "pending_tick_s": 0.5})
    a = ProfilesApp(s, tmp_path / "profiles.log")
    evs = [
        EngagementV1(user_id="u1", item_id="ghost", event="like", ts=START, event_id=f"g{i}")
        for i in range(5)  # an item whose features never come
    ]
    send_records(s, engagement_records(s, evs))
    a.start()
    try:
        wait_for(lambda: topic_size(s, s.topics.unmatched_topic) >= 5, 120, "5 unmatched records")
        got = [UnmatchedEngagementV1.model_validate_json(r.value or b"") for r in records(s, s.topics.unmatched_topic)]
        assert sorted((u.reason, u.engagement_id) for u in got) == [
            ("pending_expired", "g0"), ("pending_expired", "g1"), ("pending_expired", "g2"),
            ("pending_full", "g3"), ("pending_full", "g4"),
        ]  # fmt: skip
        assert all(u.user_id == "u1" and u.item_id == "ghost" for u in got)
        assert a.lookup("u1") is None  # nothing was applied
        assert records(s, s.topics.profiles_topic) == []
    finally:
        a.stop(signal.SIGKILL)


def test_profiles_v2_replayed_against_new_features_beside_the_live_app(ps: Settings, app: ProfilesApp, tmp_path: Path) -> None:
    items = item_tokens(12)
    send_records(ps, features(ps, items))
    evs = send_engagements(ps, users=6, items=list(items), n=200, seed=4)
    app.start()
    truth = recompute_profiles(ps, profile_config(ps))
    wait_converged(app, truth, 120)

    # a new feature version (say, a new captioner backfilled into v2): other tokens for the same items
    prefix = ps.topics.uploads_topic.split(".")[0]
    v2 = ps.updated({
            "features_topic": f"{prefix}.media.item-features.v2", "profiles_topic": f"{prefix}.user.profiles.v2",
            "profiles_app_id": f"{ps.profiles.profiles_app_id}.{prefix}.user.profiles.v2", "profiles_web_port": free_port(),
        }
    )  # fmt: skip
    ensure_topics(v2, app_topics(v2))
    # a pending cap of 1: engagements joining before the v2 features are loaded would overflow to unmatched
    send_records(v2, features(v2, {k: [t + 40 for t in toks] for k, toks in items.items()}, captioner="cap@2"))
    flags = [
        "--features-topic",
        v2.topics.features_topic,
        "--profiles-topic",
        v2.topics.profiles_topic,
        "--web-port",
        str(v2.profiles.profiles_web_port),
    ]
    replay = ProfilesApp(v2, tmp_path / "profiles-v2.log")
    replay.proc = start_cli(ps.updated({"pending_max_per_item": 1}), replay.log, "profiles", *flags)  # app id from the topic
    try:
        truth2 = recompute_profiles(v2, profile_config(v2))
        assert sum(p.applied for p in truth2.values()) == len(evs)
        assert truth2["u0"].weights != truth["u0"].weights
        wait_converged(replay, truth2, 180)
        wait_converged(app, truth, 30)  # the live app is untouched
        assert records(ps, ps.topics.unmatched_topic) == []  # the replay read its features before its engagements

        # lineage: which captioner and tokenizer versions made each profile, in the lookup and on the topic
        live, rebuilt = app.lookup("u0"), replay.lookup("u0")
        assert live is not None and rebuilt is not None
        assert live.feature_lineage == {"captioner=cap@1 word=w@1": truth["u0"].applied} and live.features_topic == ps.topics.features_topic
        assert rebuilt.feature_lineage == {"captioner=cap@2 word=w@1": truth2["u0"].applied}
        assert rebuilt.features_topic == v2.topics.features_topic
        tail = run_cli(ps, "tail", v2.topics.profiles_topic, "--timeout", "3")
        assert tail.returncode == 0 and "lineage: " + v2.topics.features_topic + ": captioner=cap@2 word=w@1" in tail.stdout
        shown = run_cli(ps, "profile", "u0", "--url", replay.url)
        assert shown.returncode == 0 and "captioner=cap@2" in shown.stdout
    finally:
        replay.stop(signal.SIGKILL)
