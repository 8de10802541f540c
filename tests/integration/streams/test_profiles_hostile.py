"""The profiles app under hostile records, on the real broker: every bad engagement, feature record or internal
message ends in the DLQ with its reason, no agent crashes, the features-first gate opens although the
features partitions end in bad records, and everything the app publishes or answers is strict JSON its
schema reads back."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from mmfeat.cli.produce import send_records
from mmfeat.errors import ServiceError
from mmfeat.kafka.client import make_producer
from mmfeat.schemas import DlqRecordV1, UserProfileV1
from mmfeat.settings import Settings
from mmfeat.topics import internal_topics
from streams.client import fetch_profile
from streams.offline import recompute_profiles
from streams.rules import profile_config
from tests.integration.conftest import records, run_cli, wait_for
from tests.integration.profiles import ProfilesApp, features, http_status, item_tokens, send_engagements, wait_converged


def strict_json(raw: bytes) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(raw, parse_constant=refuse)


def test_hostile_records_reach_the_dlq_and_the_gate_still_opens(ps: Settings, app: ProfilesApp) -> None:
    assert ps.profiles.features_first_timeout_s >= 600  # a gate stuck on a DLQ'd record would outlast this test
    items = item_tokens(10)
    send_records(ps, features(ps, items))
    base = {"item_id": "it-x", "captioner_version": "c@1"}
    bad_features = {
        "it-versions-list": {**base, "token_ids": {"word": [3]}, "tokenizer_versions": ["w@1"]},
        "it-bool-ids": {**base, "token_ids": {"word": [True, 4]}},
        "it-negative": {**base, "token_ids": {"word": [-7]}},
        "it-huge": {**base, "token_ids": {"word": [10**22]}},
    }
    producer = make_producer(ps)
    for key, value in bad_features.items():
        producer.produce(ps.topics.features_topic, key=key.encode(), value=json.dumps(value).encode())
    for part in (0, 1):  # each features partition ends in a bad record
        producer.produce(
            ps.topics.features_topic, key=b"it-deep", value=b'{"token_ids": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", partition=part
        )
    evs = send_engagements(ps, users=6, items=list(items), n=150, seed=5)
    good = evs[0].model_dump(mode="json", exclude_none=True)
    bad_engagements = [
        (b'{"user_id": "u1", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "bad_json"),
        (json.dumps({**good, "item_id": "it-\ud800"}).encode(), "bad_json"),
        (json.dumps({**good, "event": "time_spent", "value": 1e308}).encode(), "bad_value"),
    ]
    for raw, _ in bad_engagements:
        producer.produce(ps.topics.engagements_topic, key=b"u1", value=raw)
    names = internal_topics(ps)
    producer.produce(names["by_user"], key=b"it-0", value=b"\x00garbage")  # internal topics are inputs too
    producer.produce(names["by_user"], key=b"u1", value=json.dumps({"e": {"id": "x"}, "tokens": [1]}).encode())
    assert producer.flush(10) == 0

    app.start()
    truth = recompute_profiles(ps, profile_config(ps))
    assert sum(p.applied for p in truth.values()) == len(evs)
    wait_converged(app, truth, 150)

    dlq = [DlqRecordV1.model_validate_json(r.value or b"") for r in records(ps, ps.topics.engagements_dlq_topic)]
    want = Counter({"bad_features": len(bad_features), "bad_json": 2 + 2, "bad_value": 1, "schema": 2})
    assert Counter(d.reason for d in dlq) == want
    assert {d.source_topic for d in dlq if d.reason == "schema"} == {names["by_user"]}
    log = app.log_text()
    assert "Traceback" not in log and "crashed" not in log.lower()
    assert all("\n" not in d.error_message for d in dlq)

    for rec in records(ps, ps.topics.profiles_topic):  # every published profile is strict JSON its schema reads back
        UserProfileV1.model_validate_json(json.dumps(strict_json(rec.value or b"")))
    with urllib.request.urlopen(f"{app.url}/profiles/u0", timeout=5) as r:
        UserProfileV1.model_validate_json(json.dumps(strict_json(r.read())))


def test_a_lookup_token_guards_the_profiles_and_not_the_metrics(ps: Settings, tmp_path: Path) -> None:
    s = ps.updated({"profiles_lookup_token": "tok-123"})
    a = ProfilesApp(s, tmp_path / "profiles.log")
    items = item_tokens(5)
    send_records(s, features(s, items))
    send_engagements(s, users=3, items=list(items), n=30, seed=9)
    truth = recompute_profiles(s, profile_config(s))
    a.start()
    try:
        wait_for(lambda: http_status(f"{a.url}/metrics") == 200, 60, "the app's web port")

        def status(headers: dict[str, str]) -> int:
            req = urllib.request.Request(f"{a.url}/profiles/u0", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return e.code

        wait_for(lambda: status({"Authorization": "Bearer tok-123"}) == 200, 120, "u0's profile with the token")
        assert status({}) == 401 and status({"Authorization": "Bearer tok-12"}) == 401 and status({"Authorization": "tok-123"}) == 401
        got = fetch_profile(a.url, "u0", token="tok-123")
        assert got.engagements == truth["u0"].applied
        with pytest.raises(ServiceError, match="HTTP 401: a bearer token is required"):
            fetch_profile(a.url, "u0")
        shown = run_cli(s, "profile", "u0", "--url", a.url)  # the CLI sends the token from its settings
        assert shown.returncode == 0 and f"{got.engagements} engagements" in shown.stdout, shown.stderr
    finally:
        a.stop(signal.SIGKILL)
