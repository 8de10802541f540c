"""deploy/: the Grafana dashboard charts only series that exist, and every mmfeat series is on it."""

from __future__ import annotations

import json
import re

import yaml  # type: ignore[import-untyped]

from mmfeat.metrics import series_names
from mmfeat.settings import PROJECT_ROOT, Settings

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "mmfeat.json"
# Triton's own series the dashboard uses (tritonserver --allow-metrics, seen on its /metrics port)
TRITON = {"nv_inference_request_duration_us", "nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count"}


def exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_every_charted_series_exists() -> None:
    used = {m for e in exprs() for m in re.findall(r"\b((?:mmfeat|nv)_[a-z_]+)", e)}
    assert used - series_names() - TRITON == set()
    assert used >= TRITON


def test_every_mmfeat_series_is_charted() -> None:
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in series_names()}
    text = " ".join(exprs())
    assert {f for f in families if f not in text} == set()


def test_prometheus_config_scrapes_the_default_ports() -> None:
    conf = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in conf["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    d = Settings()
    ports = {d.metrics.worker_metrics_port, d.metrics.backfill_metrics_port, d.profiles.profiles_web_port, d.services.triton_metrics_port}
    assert {int(t.rsplit(":", 1)[1]) for t in targets} == ports
