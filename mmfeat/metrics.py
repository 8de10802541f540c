"""Prometheus metrics of the caption worker, the backfill and the profiles app.

Each component owns a registry of its own (several workers can live in one test process) and serves it
on a /metrics port: the worker and the backfill with prometheus_client's HTTP server, the profiles app on
its Faust web port. deploy/grafana/mmfeat.json charts these names; docs/metrics.md lists them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

log = logging.getLogger("mmfeat.metrics")

# Freshness spans milliseconds (live) to days (a backfill of last week): the buckets do too.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Base:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter("mmfeat_records_in", "Records consumed, per topic", ["topic"], registry=r)
        self.records_out = Counter("mmfeat_records_out", "Records produced and acknowledged, per topic", ["topic"], registry=r)
        self.dlq = Counter("mmfeat_dlq", "Records sent to a dead-letter topic, per reason", ["reason"], registry=r)
        lag_help = "Records between the consumer's position and the high watermark"
        self.lag = Gauge("mmfeat_consumer_lag", lag_help, ["topic", "partition"], registry=r)
        self._server: Any = None

    def count_in(self, topics: Iterable[str]) -> None:
        for t in topics:
            self.records_in.labels(t).inc()

    def count_out(self, topics: Iterable[str]) -> None:
        for t in topics:
            self.records_out.labels(t).inc()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback: per-partition consumer lag of what this consumer holds."""
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        for topic, t in stats.get("topics", {}).items():
            for part, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if part != "-1" and p.get("fetch_state") not in (None, "none") and lag >= 0:
                    self.lag.labels(topic, part).set(lag)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on ``port`` (0: not at all) until ``close``."""
        if port:
            self._server, _ = start_http_server(port, host, registry=self.registry)
            log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class WorkerMetrics(_Base):
    """The caption worker's (and the backfill's: the same code path) series."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.deferred = Counter("mmfeat_deferred", "Uploads deferred to the deferred topic, per reason", ["reason"], registry=r)
        self.triton_seconds = Histogram(
            "mmfeat_triton_request_seconds", "Wall time of one captioner call (a micro-batch's requests, sent together)",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.triton_batch = Histogram("mmfeat_triton_batch_images", "Images per captioner call", buckets=BATCH_BUCKETS, registry=r)
        self.dedupe_hits = Counter("mmfeat_dedupe_hits", "Uploads answered from the dedupe store or a batch twin", registry=r)
        self.freshness = Histogram(
            "mmfeat_upload_to_feature_seconds", "From the upload's created_at (event time) to its feature record acknowledged",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip


class ProfileMetrics(_Base):
    """The profiles app's series (served on its web port)."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.unmatched = Counter("mmfeat_unmatched", "Engagements given up on (never joined), per reason", ["reason"], registry=r)
        self.duplicates = Counter(
            "mmfeat_profile_duplicates", "Engagements not applied again: redelivered (by source offset) or a repeated event id", registry=r
        )
        self.freshness = Histogram(
            "mmfeat_engagement_to_profile_seconds", "From the engagement's ts (event time) to the profile update it caused being sent",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip


def series_names() -> set[str]:
    """Every series name as scraped (counters end in _total): what a dashboard may chart."""
    names: set[str] = set()
    for m in (WorkerMetrics(), ProfileMetrics()):
        for family in m.registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
            names.update(family.name + suffix for suffix in suffixes)
    return names
