"""`mmfeat backfill` on the real broker and Triton: exactly the range, the live worker's values, resumable, paced."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import TopicPartition

from captioner.configuration import read_manifest
from mmfeat.cli.produce import image_uploads, send_uploads
from mmfeat.cli.services import free_port
from mmfeat.errors import KafkaIOError
from mmfeat.kafka.client import make_consumer, make_producer
from mmfeat.schemas import H_CAPTIONER, H_SOURCE, DlqRecordV1, now_utc
from mmfeat.settings import Settings
from tests.integration.conftest import Stack, by_key, records, run_cli, sample, scrape, small_images, start_cli, wait_for
from workers.worker import BackgroundWorker


def _instant() -> str:
    """An ISO time strictly between the records sent before and after it (ms timestamps)."""
    time.sleep(0.05)
    t = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    return t


def _count(s: Settings, topic: str) -> int:
    try:
        return len(records(s, topic))
    except KafkaIOError:  # the backfill creates its topic once it is up
        return 0


def _committed(s: Settings, group: str) -> list[int]:
    """The group's committed offset in each of the uploads topic's two partitions (-1001: none yet)."""
    c = make_consumer(s, group)
    try:
        return [tp.offset for tp in c.committed([TopicPartition(s.topics.uploads_topic, p) for p in (0, 1)], timeout=10)]
    finally:
        c.close()


def _summary(stdout: str) -> dict:  # type: ignore[type-arg]
    return json.loads(stdout.strip().splitlines()[-1])


def test_backfill_replays_exactly_the_range_with_the_live_values(stack: Stack, settings: Settings) -> None:
    paths = small_images(20, seed=11)
    before = [u for u, _ in image_uploads(paths[:6], inline=True, prefix="pre")]
    inside = [u for u, _ in image_uploads(paths[6:14], inline=False, prefix="in")]
    after = [u for u, _ in image_uploads(paths[14:], inline=True, prefix="post")]
    send_uploads(settings, iter(before))
    since = _instant()
    send_uploads(settings, iter(inside))
    bad = make_producer(settings)
    bad.produce(settings.topics.uploads_topic, key=b"in-bad", value=b'{"item_id": "in-bad", "truncated')
    bad.flush(10)
    until = _instant()
    send_uploads(settings, iter(after))

    live_worker = BackgroundWorker(settings, idle_exit_s=600)  # keeps running (and holding its dedupe store) during the backfill
    wait_for(lambda: live_worker.worker.stats.handled == 21, 180, "the live worker to handle all 21 uploads")

    v2 = settings.topics.uploads_topic.replace("media.uploads", "media.item-features.v2")
    args = ["--since", since, "--until", until, "--features-topic", v2, "--captioner", str(stack.model_dir), "--rate", "50", "--json"]
    done = run_cli(settings, "backfill", *args, timeout_s=300)
    assert live_worker.alive()
    live_worker.worker.stop()
    live = live_worker.join(60)
    assert (live.features, live.dlq) == (20, 1)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = _summary(done.stdout)
    assert summary["finished"] and (summary["features"], summary["dlq"], summary["outside"]) == (8, 1, 0)
    assert summary["dlq_reasons"] == {"bad_json": 1}
    assert summary["request"]["model"].startswith("captioner-")  # loaded into Triton beside the live model

    v1_recs, v2_recs = by_key(records(settings, settings.topics.features_topic)), by_key(records(settings, v2))
    assert set(v2_recs) == {u.item_id for u in inside}  # exactly the uploads of the range
    version = read_manifest(stack.model_dir).version
    for item_id, rec in v2_recs.items():
        assert rec.value == v1_recs[item_id].value  # byte-identical to the live worker's record
        assert rec.headers[H_CAPTIONER] == version
        assert rec.headers[H_SOURCE].startswith(f"{settings.topics.uploads_topic}[")
    dlq = [DlqRecordV1.model_validate_json(r.value or b"") for r in records(settings, settings.topics.dlq_topic)]
    # the live worker's and the backfill's DLQ records, for the same source record
    assert len(dlq) == 2 and len({(d.reason, d.source_partition, d.source_offset, d.raw_key_b64) for d in dlq}) == 1

    # Another version with one token list only: the same word ids as the live record, nothing else.
    v3 = v2.replace(".v2", ".v3")
    words = run_cli(settings, "backfill", *[v3 if a == v2 else a for a in args], "--tokenizers", "word", timeout_s=300)
    assert words.returncode == 0, words.stderr[-2000:]
    v3_recs = by_key(records(settings, v3))
    assert set(v3_recs) == set(v2_recs)
    for item_id, rec in v3_recs.items():
        got, live_ids = json.loads(rec.value or b""), json.loads(v1_recs[item_id].value or b"")["sources"]["caption"]["token_ids"]
        assert got["sources"]["caption"]["token_ids"] == {"word": live_ids["word"]} and got["tokenizer_versions"].keys() == {"word"}

    # The same command again finds its plan finished and does nothing.
    again = run_cli(settings, "backfill", *args, timeout_s=300)
    assert again.returncode == 0 and _summary(again.stdout)["records_this_run"] == 0
    assert len(records(settings, v2)) == 9 - 1  # no new records


def test_sigkill_mid_backfill_then_rerun_continues_and_keeps_the_rate(stack: Stack, settings: Settings, tmp_path: Path) -> None:
    uploads = [u for u, _ in image_uploads(small_images(26, seed=12), inline=True, prefix="bf")]
    since = _instant()
    # Partition 0 gets 2 uploads, partition 1 the rest. Which one the backfill's consumer reaches first is the
    # fetch's order, so the kill may find partition 0 finished or not yet begun; either way the rerun must
    # continue each partition from what the killed run committed, and redo nothing committed.
    producer = make_producer(settings)
    for i, u in enumerate(uploads):
        u = u.model_copy(update={"created_at": now_utc()})
        value = u.model_dump_json(exclude_none=True).encode()
        producer.produce(settings.topics.uploads_topic, key=u.item_id.encode(), value=value, partition=0 if i < 2 else 1)
    producer.flush(10)
    live = BackgroundWorker(settings, max_records=26, idle_exit_s=60).join(180)
    assert live.features == 26

    v2 = settings.topics.uploads_topic.replace("media.uploads", "media.item-features.v2")
    group = f"mmfeat-backfill.uploads.{v2}"  # the CLI's default group for this source and topic
    rate = 4.0
    args = ["--since", since, "--until", "now", "--features-topic", v2, "--rate", str(rate), "--json"]
    log = tmp_path / "backfill.log"
    port = free_port()
    first = start_cli(settings.updated({"backfill_metrics_port": port}), log, "backfill", *args)
    try:
        wait_for(lambda: _count(settings, v2) >= 6, 120, "6 backfilled records")
        wait_for(lambda: sum(max(o, 0) for o in _committed(settings, group)) >= 4, 60, "4 replayed records committed")

        def metrics_count_them() -> bool:  # the backfill's own /metrics while it runs
            try:
                m = scrape(f"http://{settings.metrics.metrics_host}:{port}/metrics")
            except OSError:
                return False
            series = [("mmfeat_records_out_total", {"topic": v2}), ("mmfeat_records_in_total", {"topic": settings.topics.uploads_topic}),
                      ("mmfeat_upload_to_feature_seconds_count", {})]  # fmt: skip
            return all((sample(m, name, **labels) or 0) >= 6 for name, labels in series)

        wait_for(metrics_count_them, 30, "the backfill's /metrics to count 6 records")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    killed_at = len(records(settings, v2))
    assert killed_at < 26, log.read_text()[-2000:]
    at_kill = _committed(settings, group)  # the plan commits each partition's start at once, then progress
    assert all(o >= 0 for o in at_kill) and 4 <= sum(at_kill) < 26, at_kill

    # The same command again: "now" means a later time by now, but the group's unfinished plan is continued.
    rerun_began_ms = time.time() * 1000
    rerun = run_cli(settings, "backfill", *args, timeout_s=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = _summary(rerun.stdout)
    p0, p1 = summary["partitions"]
    assert (p0["start"], p0["end"], p1["start"], p1["end"]) == (0, 2, 0, 24)  # the killed run's plan
    for p, committed in zip((p0, p1), at_kill, strict=True):
        # continued where the killed run had committed; a partition it had finished is not redone
        assert p["finished"] and p["resumed_at"] == committed and p["features"] == p["end"] - committed, (p, at_kill)
    assert summary["finished"] and summary["records_this_run"] == summary["features"] == 26 - sum(at_kill)

    final, v1 = by_key(records(settings, v2)), by_key(records(settings, settings.topics.features_topic))
    assert set(final) == {u.item_id for u in uploads}  # nothing missing
    assert all(final[k].value == v1[k].value for k in final)

    # The rate limit: the rerun's records went out no faster than --rate (one batch of int(rate) may go at once).
    stamps = sorted(r.timestamp_ms for r in records(settings, v2) if r.timestamp_ms >= rerun_began_ms)
    assert len(stamps) == summary["features"] >= 8
    spread_s = (stamps[-1] - stamps[0]) / 1000
    assert spread_s >= 0.9 * (len(stamps) - int(rate)) / rate, (len(stamps), spread_s)


def test_deferred_uploads_are_replayed_into_the_live_topic(settings: Settings) -> None:
    tight = settings.updated({"budget_rate_per_s": 0.0001, "budget_burst": 3})
    uploads = [u for u, _ in image_uploads(small_images(8, seed=13), inline=True, prefix="dfr")]
    since = _instant()
    send_uploads(tight, iter(uploads))
    live = BackgroundWorker(tight, max_records=8, idle_exit_s=60).join(120)
    assert (live.features, live.deferred) == (3, 5)

    args = ["--source", "deferred", "--since", since, "--features-topic", settings.topics.features_topic, "--rate", "20", "--json"]
    done = run_cli(settings, "backfill", *args, timeout_s=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _summary(done.stdout)["features"] == 5
    feats = by_key(records(settings, settings.topics.features_topic))
    assert set(feats) == {u.item_id for u in uploads}  # every upload has its features now
    replayed = [r for r in feats.values() if r.headers[H_SOURCE].startswith(f"{settings.topics.deferred_topic}[")]
    assert len(replayed) == 5
