"""Uploads in, feature records out, on the real broker and the real Triton server."""

from __future__ import annotations

from captioner.configuration import read_manifest
from captioner.runtime import CaptionerRuntime
from mmfeat.cli.produce import image_uploads, send_uploads
from mmfeat.normalize import normalize_caption, normalize_post_text
from mmfeat.schemas import H_CAPTIONER, H_DEDUPE, H_SCHEMA, H_SOURCE, H_TOKENIZERS, DeferredRecordV1, FeatureRecordV2, UploadV1
from mmfeat.settings import DEFAULT_CAPTIONER, Settings
from mmfeat.tokenizers import load_tokenizers
from tests.integration.conftest import Stack, by_key, committed_lag, records, small_images
from workers.worker import BackgroundWorker


def test_n_uploads_give_n_feature_records(stack: Stack, settings: Settings) -> None:
    paths = small_images(24, seed=1)
    pairs = list(image_uploads(paths[:12], inline=True, prefix="inl")) + list(image_uploads(paths[12:], inline=False, prefix="ref"))
    uploads = {u.item_id: u for u, _ in pairs}
    assert send_uploads(settings, iter(uploads.values())) == 24

    stats = BackgroundWorker(settings, max_records=24, idle_exit_s=60).join(180)
    assert (stats.features, stats.deferred, stats.dlq) == (24, 0, 0)

    feats = records(settings, settings.topics.features_topic)
    assert len(feats) == 24
    assert set(by_key(feats)) == set(uploads)
    assert records(settings, settings.topics.dlq_topic) == [] and records(settings, settings.topics.deferred_topic) == []
    assert committed_lag(settings) == 0

    # The worker publishes what the model says: the same captions, computed offline in one batch.
    runtime = CaptionerRuntime(stack.model_dir)
    order = sorted(uploads)
    path_of = {u.item_id: p for (u, _), p in zip(pairs, paths, strict=True)}
    expected = runtime.caption([runtime.decode(path_of[i].read_bytes(), settings.fetch.max_pixels) for i in order], [""] * len(order))
    toks = load_tokenizers(["sp", "word", "hash"], settings.features.tokenizer_dir, settings.features.hash_buckets)
    version = read_manifest(stack.model_dir).version
    for item_id, cap in zip(order, expected, strict=True):
        rec = by_key(feats)[item_id]
        value = FeatureRecordV2.model_validate_json(rec.value or b"")
        caption = value.sources["caption"]
        assert value.item_id == item_id and value.owner_id == uploads[item_id].owner_id and value.media_type == "image"
        assert caption.raw == cap.text
        assert caption.text == normalize_caption(cap.text)
        assert caption.token_ids["decoder"] == cap.token_ids
        for name, tok in toks.items():
            assert caption.token_ids[name] == tok.encode(caption.text), name
            assert value.tokenizer_versions[name] == tok.version
        # a version 1 upload's text (here the file's stem) is its post text
        assert value.sources["post_text"].text == normalize_post_text(uploads[item_id].text)
        assert rec.headers[H_CAPTIONER] == version == value.model_versions["captioner"]
        assert rec.headers[H_SCHEMA] == "2"
        assert f"sp={toks['sp'].version}" in rec.headers[H_TOKENIZERS]
        assert rec.headers[H_SOURCE].startswith(f"{settings.topics.uploads_topic}[") and rec.headers[H_SOURCE].endswith(f"item={item_id}")


def test_budget_overflow_is_deferred_not_dropped(settings: Settings) -> None:
    s = settings.updated({"budget_rate_per_s": 0.0001, "budget_burst": 3})
    uploads = [u for u, _ in image_uploads(small_images(8, seed=2), inline=True, prefix="bud")]
    send_uploads(s, iter(uploads))
    stats = BackgroundWorker(s, max_records=8, idle_exit_s=60).join(120)
    assert (stats.features, stats.deferred, stats.dlq) == (3, 5, 0)
    deferred = records(s, s.topics.deferred_topic)
    assert len(deferred) == 5
    featured = set(by_key(records(s, s.topics.features_topic)))
    sent = {u.item_id: u for u in uploads}
    for rec in deferred:
        d = DeferredRecordV1.model_validate_json(rec.value or b"")
        assert d.reason == "budget" and rec.key == d.item_id and d.item_id not in featured
        # the deferred record carries the upload verbatim, ready to be replayed
        assert UploadV1.model_validate_json(d.upload_json).media_b64 == sent[d.item_id].media_b64
    assert featured | {r.key for r in deferred} == set(sent)


def test_identical_content_is_captioned_once(settings: Settings) -> None:
    path = small_images(1, seed=3)[0]
    first = [u for u, _ in image_uploads([path, path, path], inline=True, prefix="dupA")]
    send_uploads(settings, iter(first))
    stats = BackgroundWorker(settings, max_records=3, idle_exit_s=60).join(120)
    assert stats.features == 3 and stats.dedupe_hits == 2
    # a later upload of the same bytes is answered from the dedupe store
    second = [u.model_copy(update={"item_id": "dupB-0"}) for u in first[:1]]
    send_uploads(settings, iter(second))
    stats2 = BackgroundWorker(settings, max_records=1, idle_exit_s=60).join(120)
    feats = by_key(records(settings, settings.topics.features_topic))
    assert set(feats) == {"dupA-000000", "dupA-000001", "dupA-000002", "dupB-0"}
    captions = {FeatureRecordV2.model_validate_json(r.value or b"").sources["caption"].raw for r in feats.values()}
    assert len(captions) == 1
    assert sorted(r.headers[H_DEDUPE] for r in feats.values()) == ["hit", "hit", "hit", "miss"]
    assert stats2.features == 1 and stats2.dedupe_hits == 1


def test_the_trained_default_captioner_names_what_is_in_the_scene(settings: Settings) -> None:
    """Through Triton and the worker: held-out scenes (pairs never seen in training) come out right."""
    import base64

    from captioner.evaluation.quality import held_out_sets, mentioned
    from captioner.world.clipart import load_vocabulary, png_bytes
    from mmfeat.schemas import now_utc

    s = settings.updated({"triton_model": "captioner_default"})
    held = held_out_sets(12, seed=7)[0]  # new compositions
    uploads = [
        UploadV1(
            item_id=f"scene-{i}",
            owner_id="o",
            media_type="image",
            media_b64=base64.b64encode(png_bytes(img)).decode(),
            created_at=now_utc(),
        )
        for i, img in enumerate(held.images)
    ]
    send_uploads(s, iter(uploads))
    stats = BackgroundWorker(s, max_records=len(uploads), idle_exit_s=60).join(180)
    assert stats.features == len(uploads)
    feats = by_key(records(s, s.topics.features_topic))
    names = sorted(load_vocabulary())
    found = total = 0
    for i, scene in enumerate(held.scenes):
        value = FeatureRecordV2.model_validate_json(feats[f"scene-{i}"].value or b"")
        assert value.model_versions["captioner"] == read_manifest(DEFAULT_CAPTIONER).version
        found += len(mentioned(value.sources["caption"].text, names) & set(scene.names))
        total += len(scene.names)
    assert found / total >= 0.8, f"{found}/{total} objects named"


def test_semantic_ids_come_from_the_embedding_of_the_same_triton_call(settings: Settings) -> None:
    """Tokenizer C opted in, on the trained default captioner: each record's embedding is the model's (computed
    offline on the same images) and its codes are the committed codebook's of that embedding; the untrained
    captioner's records are refused as codebook_mismatch, one DLQ record each, the worker going on."""
    import base64

    import numpy as np

    from captioner.evaluation.quality import held_out_sets
    from captioner.world.clipart import png_bytes
    from mmfeat.schemas import DlqRecordV1, now_utc
    from mmfeat.semantic_ids import code_ids, prefix_ids

    names = [*settings.features.tokenizers, "sid", "sid_prefix"]
    s = settings.updated({"triton_model": "captioner_default", "tokenizers": names})
    images = held_out_sets(6, seed=11)[0].images
    blobs = [png_bytes(img) for img in images]
    uploads = [
        UploadV1(item_id=f"sid-{i}", owner_id="o", media_type="image", media_b64=base64.b64encode(b).decode(), created_at=now_utc())
        for i, b in enumerate(blobs)
    ]
    send_uploads(s, iter(uploads))
    stats = BackgroundWorker(s, max_records=len(uploads), idle_exit_s=60).join(180)
    assert (stats.features, stats.dlq) == (len(uploads), 0)
    feats = by_key(records(s, s.topics.features_topic))
    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    offline = runtime.caption([runtime.decode(b, s.fetch.max_pixels) for b in blobs], [""] * len(blobs))
    toks = load_tokenizers(["sid", "sid_prefix"], s.features.tokenizer_dir, s.features.hash_buckets)
    book = toks["sid"].book  # type: ignore[attr-defined]
    for i, cap in enumerate(offline):
        value = FeatureRecordV2.model_validate_json(feats[f"sid-{i}"].value or b"")
        assert value.embedding is not None and value.embedding.dim == 256
        got = value.embedding.array()
        assert np.abs(got - cap.embedding_array()).max() < 2e-2  # the same model on the same pixels, batched differently
        codes = book.encode(got[None, :])[0]
        assert value.ids("sid") == code_ids(codes, book.size)
        assert value.ids("sid_prefix") == prefix_ids(codes, book.size)
        assert (
            value.tokenizer_versions["sid"] == toks["sid"].version and value.tokenizer_versions["sid_prefix"] == toks["sid_prefix"].version
        )

    other = settings.updated({"tokenizers": names})  # the untrained captioner: not the codebook's embedding space
    more = [u.model_copy(update={"item_id": f"sidx-{i}"}) for i, u in enumerate(uploads[:3])]
    send_uploads(other, iter(more))
    stats = BackgroundWorker(other, max_records=len(more), idle_exit_s=60).join(180)
    assert (stats.features, stats.dlq) == (0, len(more))
    dlq = [DlqRecordV1.model_validate_json(r.value or b"") for r in records(other, other.topics.dlq_topic)]
    assert sorted(d.item_id or "" for d in dlq) == sorted(u.item_id for u in more)
    assert {d.reason for d in dlq} == {"codebook_mismatch"} and all("quantizes captioner" in d.error_message for d in dlq)
