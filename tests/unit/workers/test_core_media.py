"""The caption core on videos and text posts: frames captioned once per distinct picture, a video's budget
taken per frame and deferred whole, a post of words alone needing no captioner."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mmfeat.features import FeatureBuilder
from mmfeat.media import Limits, kind_of
from mmfeat.media.video import VideoLimits, encode_test_video
from mmfeat.schemas import FeatureRecordV2, parse_feature_record
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import load_tokenizers
from tests.unit.mmfeat.media.test_video import scene, three_scenes
from tests.unit.workers.test_core import IMAGES, NAMES, DictCache, FakeCaptioner, batch, check_outcomes
from workers.core import CaptionCore, Kind, Parts, Topics
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
            frames=lambda u, media: kind_of(u.media_type).frames(media, LIMITS), content_key=lambda media: content_key(media, ""),
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
