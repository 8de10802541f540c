"""The caption core on videos and text posts: frames captioned once per distinct picture, a video's budget
taken per frame and deferred whole, a post of words alone needing no captioner."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmfeat.errors import CaptionRejected, RecordError
from mmfeat.features import FeatureBuilder
from mmfeat.media import Limits, kind_of
from mmfeat.media.video import VideoLimits, encode_test_video
from mmfeat.schemas import FeatureRecordV2, parse_feature_record
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import load_tokenizers
from mmfeat.triton_contract import Caption
from tests.unit.mmfeat.media.test_video import scene, three_scenes
from tests.unit.workers.test_core import IMAGES, NAMES, DictCache, FakeCaptioner, batch, check_outcomes
from workers.core import CaptionCore, CaptionResult, Kind, Parts, Topics
from workers.fetch import FetchPolicy, fetch_media
from workers.gate import TokenBucket, content_key

BUILDER_V2 = FeatureBuilder(load_tokenizers(NAMES, ASSETS / "tokenizers", 1 << 20), NAMES, 32, schema=2)
LIMITS = Limits(video=VideoLimits(frames=4))
SCENES = encode_test_video(three_scenes(), fps=4)  # 3 distinct pictures among its 4 sampled frames
STILL = encode_test_video([scene(2)] * 12, fps=4)  # 1 picture, sampled 4 times


def media_core(tmp_path: Path, captioner: FakeCaptioner, *, budget: int | None = None, cache: DictCache | None = None) -> CaptionCore:
    policy = FetchPolicy.of([tmp_path], (), 2_000_000, 1.0)
    return CaptionCore(
        Parts(
            captioner=captioner, cache=cache or DictCache(), builder=BUILDER_V2, fetch=lambda u: fetch_media(u, policy),
            prepare=lambda u, media: kind_of(u.media_type).prepare(media, LIMITS), content_key=lambda media: content_key(media, ""),
            topics=Topics("features", "deferred", "dlq"), budget=TokenBucket(0.0001, budget) if budget is not None else None,
            max_record_bytes=4_000_000,
        )
    )  # fmt: skip


def v2(item: str, kind: str, media: bytes | None = None, **fields: object) -> bytes:
    rec: dict[str, object] = {
        "schema_version": 2,
        "item_id": item,
        "owner_id": "o1",
        "media_type": kind,
        "created_at": "2026-11-01T00:00:00Z",
    }
    if media is not None:
        rec["media_b64"] = base64.b64encode(media).decode()
    return json.dumps({**rec, **fields}).encode()


def test_videos_images_and_text_posts_each_get_their_feature_record(tmp_path: Path) -> None:
    cap = FakeCaptioner()
    values = [
        v2("vid", "video", SCENES, title="Three colours"),
        v2("still", "video", STILL),
        v2("img", "image", IMAGES[0]),
        v2("post", "text", title="Sunday market", text="fresh #LocalApples today"),
    ]
    incoming = batch(values)
    out = media_core(tmp_path, cap).run(incoming)
    check_outcomes(incoming, out)
    assert [o.kind for o in out] == [Kind.FEATURE] * 4
    recs = [parse_feature_record(o.record.value or b"") for o in out]
    assert all(isinstance(r, FeatureRecordV2) for r in recs)
    vid, still, img, post = recs  # type: ignore[misc]
    assert cap.calls == [3 + 1 + 1]  # one call; a distinct picture once, however often it was sampled
    assert len(vid.frames) == 4 and [f.t_s for f in vid.frames][:1] == [0.0] and vid.media_type == "video"
    assert vid.sources["caption"].text and set(vid.sources) == {"caption", "post_text"}
    assert vid.sources["post_text"].text == "three colours"
    assert len(still.frames) == 4 and len({f.caption for f in still.frames}) == 1
    assert img.frames == [] and img.model_versions == {"captioner": "fake@1"}
    assert set(post.sources) == {"post_text"} and post.sources["post_text"].text == "sunday market fresh local apples today"
    assert post.model_versions == {} and post.embedding is None


def test_a_video_over_budget_is_deferred_whole_and_its_captioned_frames_are_hits_on_replay(tmp_path: Path) -> None:
    cache = DictCache()
    cap = FakeCaptioner()
    out = media_core(tmp_path, cap, budget=2, cache=cache).run(batch([v2("vid", "video", SCENES)]))
    assert [o.kind for o in out] == [Kind.DEFERRED] and out[0].reason == "budget"  # 3 pictures, 2 tokens: nothing partial
    again = media_core(tmp_path, cap, budget=1, cache=cache).run(batch([v2("vid", "video", SCENES)]))
    assert [o.kind for o in again] == [Kind.FEATURE]  # the 2 captioned before are cache hits: 1 token is enough
    assert cap.calls == [2, 1]


def test_a_hostile_video_is_its_own_dlq_entry_and_the_batch_goes_on(tmp_path: Path) -> None:
    values = [v2("bad", "video", SCENES[: len(SCENES) // 2]), v2("ok", "video", STILL), v2("junk", "video", b"\x00" * 500)]
    incoming = batch(values)
    out = media_core(tmp_path, FakeCaptioner()).run(incoming)
    check_outcomes(incoming, out)
    assert [o.kind for o in out] == [Kind.DLQ, Kind.FEATURE, Kind.DLQ]
    assert out[0].reason == "not_a_video" and out[2].reason == "not_a_video"


class FakeOcr:
    """Reads 'SALE' on every image whose first byte hash is even, nothing on the others; counts its calls."""

    def __init__(self, *, reject: bytes | None = None) -> None:
        self.calls: list[int] = []
        self.reject = reject

    def read_many(self, items: Sequence[bytes]) -> list[CaptionResult | RecordError]:
        self.calls.append(len(items))
        out: list[CaptionResult | RecordError] = []
        for media in items:
            if media == self.reject:
                out.append(CaptionRejected("ocr rejected the image", reason="ocr"))
            else:
                text = "50% OFF\nSALE" if hashlib.sha256(media).digest()[0] % 2 == 0 else ""
                out.append(CaptionResult(Caption(text, []), "fake-ocr@1"))
        return out

    def probe_version(self) -> str:
        return "fake-ocr@1"

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def ocr_core(tmp_path: Path, ocr: FakeOcr, *, ocr_budget: int | None = None, cache: DictCache | None = None) -> CaptionCore:
    c = media_core(tmp_path, FakeCaptioner(), cache=cache)
    c.p.ocr, c.p.ocr_budget = ocr, TokenBucket(0.0001, ocr_budget) if ocr_budget is not None else None
    return CaptionCore(c.p)


def _even(media: bytes) -> bool:
    return hashlib.sha256(media).digest()[0] % 2 == 0


def test_ocr_reads_each_distinct_picture_once_and_becomes_the_ocr_source(tmp_path: Path) -> None:
    ocr = FakeOcr()
    out = ocr_core(tmp_path, ocr).run(batch([v2("vid", "video", SCENES), v2("a", "image", IMAGES[0]), v2("b", "image", IMAGES[0])]))
    assert [o.kind for o in out] == [Kind.FEATURE] * 3
    assert ocr.calls == [3 + 1]  # 3 distinct frames, and the image the two uploads share, in one call
    img = parse_feature_record(out[1].record.value or b"")
    assert isinstance(img, FeatureRecordV2) and img.model_versions["ocr"] == "fake-ocr@1"
    if _even(IMAGES[0]):
        assert img.sources["ocr"].text == "50 off sale" and img.sources["ocr"].raw == "50% OFF\nSALE"
        assert sorted(img.sources["ocr"].token_ids) == ["hash", "sp", "word"]
    else:
        assert "ocr" not in img.sources  # read, nothing on it: the model version says it was read
    vid = parse_feature_record(out[0].record.value or b"")
    assert isinstance(vid, FeatureRecordV2) and vid.model_versions["ocr"] == "fake-ocr@1"


def test_ocr_has_its_own_budget_and_cache_and_a_rejection_is_the_uploads_dlq_entry(tmp_path: Path) -> None:
    cache, ocr = DictCache(), FakeOcr()
    out = ocr_core(tmp_path, ocr, ocr_budget=2, cache=cache).run(batch([v2("vid", "video", SCENES)]))
    assert [o.kind for o in out] == [Kind.DEFERRED]  # 3 pictures, 2 OCR tokens (the captioner had room)
    again = ocr_core(tmp_path, ocr, ocr_budget=1, cache=cache).run(batch([v2("vid", "video", SCENES)]))
    assert [o.kind for o in again] == [Kind.FEATURE] and ocr.calls == [2, 1]  # the captions and 2 reads were cached
    bad = ocr_core(tmp_path, FakeOcr(reject=IMAGES[1])).run(batch([v2("x", "image", IMAGES[1]), v2("y", "image", IMAGES[2])]))
    assert [o.kind for o in bad] == [Kind.DLQ, Kind.FEATURE] and bad[0].reason == "ocr"


class FakeAsr(FakeOcr):
    """Hears 'hello world' in any sound."""

    def read_many(self, items: Sequence[bytes]) -> list[CaptionResult | RecordError]:
        self.calls.append(len(items))
        return [CaptionResult(Caption("hello world", []), "fake-asr@1") for _ in items]


def test_speech_of_videos_and_audio_uploads_is_the_asr_source_heard_once_per_sound(tmp_path: Path) -> None:
    from mmfeat.media.audio import encode_test_audio
    from tests.unit.mmfeat.media.test_audio import tone

    frames = [scene(k) for k in range(2) for _ in range(4)]
    talking = encode_test_video(frames, fps=4, audio=np.frombuffer(tone(2.0, 16000), "<i2"))
    sound = encode_test_audio(tone(1.0, 22050), 22050)
    asr = FakeAsr()
    c = media_core(tmp_path, FakeCaptioner())
    c.p.asr = asr
    out = CaptionCore(c.p).run(batch([v2("talk", "video", talking), v2("song", "audio", sound), v2("mute", "video", STILL),
                                      v2("again", "audio", sound)]))  # fmt: skip
    assert [o.kind for o in out] == [Kind.FEATURE] * 4
    recs = [parse_feature_record(o.record.value or b"") for o in out]
    assert asr.calls == [2]  # two distinct sounds; the silent video has none
    talk, song, mute, again = recs
    assert isinstance(talk, FeatureRecordV2) and talk.sources["asr"].text == "hello world" and talk.model_versions["asr"] == "fake-asr@1"
    assert isinstance(song, FeatureRecordV2) and set(song.sources) == {"asr"} and "captioner" not in song.model_versions
    assert isinstance(mute, FeatureRecordV2) and "asr" not in mute.sources and "asr" not in mute.model_versions
    assert isinstance(again, FeatureRecordV2) and again.sources == song.sources


def test_asr_down_defers_only_the_uploads_with_sound_and_the_rest_goes_on(tmp_path: Path) -> None:
    from mmfeat.errors import CaptionerUnavailable
    from mmfeat.schemas import DeferredRecordV1
    from tests.unit.mmfeat.media.test_audio import tone

    class DownAsr(FakeAsr):
        def read_many(self, items: Sequence[bytes]) -> list[CaptionResult | RecordError]:
            raise CaptionerUnavailable("Triton at x is not ready (model asr)")

    frames = [scene(k) for k in range(2) for _ in range(4)]
    talking = encode_test_video(frames, fps=4, audio=np.frombuffer(tone(2.0, 16000), "<i2"))
    c = media_core(tmp_path, FakeCaptioner())
    c.p.asr = DownAsr()
    out = CaptionCore(c.p).run(batch([v2("talk", "video", talking), v2("img", "image", IMAGES[0]), v2("mute", "video", STILL)]))
    assert [o.kind for o in out] == [Kind.DEFERRED, Kind.FEATURE, Kind.FEATURE]
    deferred = DeferredRecordV1.model_validate_json(out[0].record.value or b"")
    assert deferred.reason == "asr_unavailable" and json.loads(deferred.upload_json)["item_id"] == "talk"  # verbatim, to replay
    assert dict(out[0].record.headers)["mmfeat-reason"] == b"asr_unavailable"
