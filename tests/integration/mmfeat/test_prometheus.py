"""The dashboard on a real Prometheus: Debian's prometheus scrapes a real run (worker, profiles app, Triton) with
deploy/prometheus/prometheus.yml, and every PromQL expression of deploy/grafana/mmfeat.json answers with a
non-empty, plausible result; the alerting rules pass `promtool check rules` and their unit tests."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from mmfeat.cli import services
from mmfeat.cli.produce import engagement_records, image_uploads, send_records, send_uploads, synthetic_engagements
from mmfeat.kafka.client import OutRecord, make_producer, topic_size
from mmfeat.schemas import now_utc
from mmfeat.settings import PROJECT_ROOT, Settings
from tests.integration.conftest import Stack, small_images, wait_for
from tests.integration.profiles import ProfilesApp
from workers.worker import BackgroundWorker

DEPLOY = PROJECT_ROOT / "deploy"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason="needs Debian's prometheus (make sysdeps)")

Vector = list[tuple[dict[str, str], float]]


def test_alerting_rules_check_and_pass_their_unit_tests() -> None:
    assert PROMTOOL
    checked = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "rules.test.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def scrape_config(targets: dict[str, str], interval: str = "1s") -> str:
    """deploy/prometheus/prometheus.yml with this run's targets and a short interval; jobs and rules as committed."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] |= {"scrape_interval": interval, "evaluation_interval": interval}
    cfg["rule_files"] = [str(DEPLOY / "prometheus" / f) for f in cfg["rule_files"]]
    assert {job["job_name"] for job in cfg["scrape_configs"]} == set(targets)
    for job in cfg["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return yaml.safe_dump(cfg)


@contextlib.contextmanager
def prometheus(tmp_path: Path, config: str) -> Iterator[str]:
    assert PROMETHEUS
    (tmp_path / "prometheus.yml").write_text(config)
    port = services.free_port()
    args = [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=(tmp_path / "prometheus.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{url}/-/ready"), 60, "prometheus ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


def api(url: str, path: str, **params: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, expr: str, at: float) -> Vector:
    data = api(url, "query", query=expr, time=f"{at:.3f}")
    assert data["resultType"] == "vector", (expr, data)
    return [(r["metric"], float(r["value"][1])) for r in data["result"]]


def total(url: str, expr: str, at: float) -> float:
    got = query(url, expr, at)
    assert len(got) == 1, (expr, got)
    return got[0][1]


def dashboard_exprs() -> dict[str, list[str]]:
    board = json.loads((DEPLOY / "grafana" / "mmfeat.json").read_text())
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in board["panels"] if p.get("targets")}


def test_every_dashboard_expression_answers_on_a_real_prometheus(stack: Stack, ps: Settings, tmp_path: Path) -> None:
    s = ps.updated(
        {
            "worker_metrics_port": services.free_port(),
            "metrics_interval_s": 0.5,
            "budget_rate_per_s": 0.0001,  # a burst of 6 captions, then deferrals: the deferred panel has a series
            "budget_burst": 6,
            "pending_ttl_s": 15.0,  # engagements on an item that never gets features give up: unmatched
            "pending_tick_s": 0.5,
        }
    )
    images = small_images(8, seed=31)
    uploads = [u for u, _ in image_uploads([*images, images[0], images[1]], inline=True, prefix="prom")]  # 2 repeats: dedupe hits
    items = [u.item_id for u in uploads]
    start = now_utc()
    evs = list(
        synthetic_engagements([f"u{i}" for i in range(6)], items[:5], 120, seed=5, start=start - timedelta(seconds=5), spacing_s=0.02)
    )
    unknown = list(synthetic_engagements(["u0", "u1"], ["prom-never"], 3, seed=6, start=start, spacing_s=0.1))
    targets = {
        "mmfeat-worker": f"127.0.0.1:{s.metrics.worker_metrics_port}",
        "mmfeat-backfill": f"127.0.0.1:{services.free_port()}",  # no backfill runs: a target that is down
        "mmfeat-profiles": f"127.0.0.1:{s.profiles.profiles_web_port}",
        "triton": f"127.0.0.1:{stack.settings.services.triton_metrics_port}",
    }
    app = ProfilesApp(s, tmp_path / "profiles.log")
    with prometheus(tmp_path, scrape_config(targets)) as url:
        app.start()
        worker = BackgroundWorker(s, idle_exit_s=120)
        try:
            # two waves: a rate is of the increase between scrapes, so a series must be scraped before the second wave
            send_uploads(s, iter(uploads[:5]))
            # engagements on the first wave's items only: none may wait out pending_ttl_s for an upload not sent yet
            send_records(s, engagement_records(s, [*evs[:60], *unknown]))
            first = ['mmfeat_upload_to_feature_seconds_count{job="mmfeat-worker"}', "mmfeat_engagement_to_profile_seconds_count"]
            wait_for(lambda: all(query(url, e, time.time()) for e in first), 120, "the first wave scraped")
            send_uploads(s, iter(uploads[5:]))
            bad = make_producer(s)
            bad.produce(s.topics.uploads_topic, key=b"prom-bad", value=b"{oops")
            bad.flush(10)
            del bad
            send_records(s, engagement_records(s, evs[60:]))
            send_records(s, [OutRecord(s.topics.engagements_topic, evs[0].user_id, evs[0].model_dump_json(exclude_none=True).encode())])

            want = {
                f'sum(mmfeat_records_in_total{{job="mmfeat-worker",topic="{s.topics.uploads_topic}"}})': len(uploads) + 1,
                f'sum(mmfeat_records_in_total{{job="mmfeat-profiles",topic="{s.topics.engagements_topic}"}})': len(evs) + len(unknown) + 1,
                'sum(mmfeat_unmatched_total{job="mmfeat-profiles"})': len(unknown),
                'sum(mmfeat_consumer_lag{job="mmfeat-worker"})': 0,
                f'sum(mmfeat_consumer_lag{{job="mmfeat-profiles",topic="{s.topics.engagements_topic}"}})': 0,
            }
            seen: dict[str, list[float]] = {}

            def settled() -> bool:
                now = time.time()
                seen.update({expr: [v for _, v in query(url, expr, now)] for expr in want})
                return all(seen[expr] == [v] for expr, v in want.items())

            try:
                wait_for(settled, 120, "the run seen by prometheus: every record in, lag 0")
            except AssertionError as e:
                raise AssertionError(f"{e}: {seen}\n{app.log_text()[-2000:]}") from None
            time.sleep(3)  # a few more scrapes: a rate needs two samples of the newest series
            at = time.time()
        finally:
            worker.worker.stop()
            worker.join(30)
            app.stop(signal.SIGKILL)

        # every dashboard expression: a non-empty vector of finite, non-negative values
        answers: dict[str, Vector] = {}
        for title, exprs in dashboard_exprs().items():
            for expr in exprs:
                got = query(url, expr, at)
                assert got, f"{title}: {expr} is empty"
                assert all(math.isfinite(v) and v >= 0 for _, v in got), (title, expr, got)
                answers[expr] = got
        assert len(answers) == sum(len(e) for e in dashboard_exprs().values())

        # and plausible: what the run did
        jobs = {m.get("job") for got in answers.values() for m, _ in got}
        assert {"mmfeat-worker", "mmfeat-profiles"} <= jobs
        out = {m["topic"]: v for m, v in query(url, 'sum by (topic) (mmfeat_records_out_total{job="mmfeat-worker"})', at)}
        assert out == {t: topic_size(s, t) for t in (s.topics.features_topic, s.topics.deferred_topic, s.topics.dlq_topic)}
        assert out[s.topics.dlq_topic] == 1 and out[s.topics.deferred_topic] >= 1
        assert out[s.topics.features_topic] + out[s.topics.deferred_topic] == len(uploads)
        assert total(url, 'sum(mmfeat_dedupe_hits_total{job="mmfeat-worker"})', at) >= 1
        assert total(url, 'sum(mmfeat_profile_duplicates_total{job="mmfeat-profiles"})', at) >= 1  # the engagement sent twice
        lag = [v for m, v in answers["sum by (job, topic) (mmfeat_consumer_lag)"] if m["topic"] in (s.topics.uploads_topic,)]
        assert lag == [0.0]
        rates = {
            m["topic"]: v for m, v in answers["sum by (job, topic) (rate(mmfeat_records_in_total[1m]))"] if m["job"] == "mmfeat-worker"
        }
        assert rates[s.topics.uploads_topic] > 0
        p50, p99 = (
            answers[f"histogram_quantile({q}, sum by (le, job) (rate(mmfeat_upload_to_feature_seconds_bucket[5m])))"] for q in (0.5, 0.99)
        )
        assert 0 < p50[0][1] <= p99[0][1] < 600  # created_at is stamped at send, moments before
        assert total(url, 'up{job="triton"}', at) == 1 and total(url, 'up{job="mmfeat-backfill"}', at) == 0
        rules = api(url, "rules")["groups"]
        assert [r["name"] for g in rules for r in g["rules"]] == [
            "MmfeatConsumerLagGrowing", "MmfeatDeadLetterRate", "MmfeatTritonUnready",
            "MmfeatUploadFreshnessOverBudget", "MmfeatProfileFreshnessOverBudget",
        ]  # fmt: skip
        assert all(r["health"] == "ok" for g in rules for r in g["rules"])
