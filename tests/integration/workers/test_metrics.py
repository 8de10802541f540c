"""The worker's /metrics after a run on the real broker and Triton: the named series with the values the run implies."""

from __future__ import annotations

from mmfeat.cli import services
from mmfeat.cli.produce import image_uploads, send_uploads
from mmfeat.kafka.client import make_producer
from mmfeat.settings import Settings
from tests.integration.conftest import sample, scrape, small_images, wait_for
from workers.worker import BackgroundWorker


def test_worker_metrics_after_a_run(settings: Settings) -> None:
    s = settings.updated(
        {"worker_metrics_port": services.free_port(), "metrics_interval_s": 0.5, "budget_rate_per_s": 0.0001, "budget_burst": 4}
    )
    uploads = [u for u, _ in image_uploads(small_images(6, seed=21), inline=True, prefix="met")]
    send_uploads(s, iter(uploads))
    bad = make_producer(s)
    bad.produce(s.topics.uploads_topic, key=b"met-bad", value=b"{oops")
    bad.flush(10)

    bg = BackgroundWorker(s, idle_exit_s=120)
    url = f"http://{s.metrics.metrics_host}:{s.metrics.worker_metrics_port}/metrics"
    try:

        def settled() -> bool:
            try:
                m = scrape(url)
            except OSError:  # the worker thread has not bound its port yet
                return False
            lag = [sample(m, "mmfeat_consumer_lag", topic=s.topics.uploads_topic, partition=str(p)) for p in range(2)]
            return sample(m, "mmfeat_records_in_total", topic=s.topics.uploads_topic) == 7 and lag == [0, 0]

        wait_for(settled, 60, "7 uploads handled and lag 0 on both partitions")
        m = scrape(url)
    finally:
        bg.worker.stop()
        bg.join(30)

    assert sample(m, "mmfeat_records_out_total", topic=s.topics.features_topic) == 4  # the budget's burst
    assert sample(m, "mmfeat_records_out_total", topic=s.topics.deferred_topic) == 2
    assert sample(m, "mmfeat_records_out_total", topic=s.topics.dlq_topic) == 1
    assert sample(m, "mmfeat_deferred_total", reason="budget") == 2
    assert sample(m, "mmfeat_dlq_total", reason="bad_json") == 1
    calls = sample(m, "mmfeat_triton_request_seconds_count") or 0
    assert calls >= 1 and (sample(m, "mmfeat_triton_request_seconds_sum") or 0) > 0
    assert sample(m, "mmfeat_triton_batch_images_sum") == 4  # every captioned image, once
    assert sample(m, "mmfeat_upload_to_feature_seconds_count") == 4
    mean = (sample(m, "mmfeat_upload_to_feature_seconds_sum") or 0) / 4
    assert 0 < mean < 120  # created_at is stamped at send time, a moment before
    # the server is gone with the worker
    try:
        scrape(url)
        raise AssertionError("metrics still served after the worker stopped")
    except OSError:
        pass
