"""`mmfeat bench media`: frames captioned per second inside videos vs the same frames sent as images.

Both sides run the real caption worker against the real Triton serving the trained default captioner, with
fresh dedupe stores, in one run: side A uploads scene videos (the worker decodes each in its sandbox,
samples its frames and captions them), side B uploads exactly the PNG frames side A captioned, as images.
The ratio of A's frames/s to B's images/s is what decoding and sampling cost next to captioning. Then the
readers through Triton: OCR images/s and the ASR real-time factor, with the captioner's images/s beside them.
"""

from __future__ import annotations

import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from captioner.world.videos import scene_videos
from mmfeat.cli.produce import send_uploads
from mmfeat.kafka.client import ensure_topics
from mmfeat.media import kind_of
from mmfeat.media.video import decode_video
from mmfeat.schemas import UploadV2, now_utc
from mmfeat.settings import Settings
from mmfeat.topics import upload_topics
from workers.worker import CaptionWorker, media_limits


def _worker_rate(s: Settings, n: int, label: str) -> float:
    """Uploads/s of a fresh worker over ``n`` uploads, from its first micro-batch to its last."""
    w = CaptionWorker(s)
    first: list[float] = []
    bar = tqdm(total=n, desc=label, unit="upload", file=sys.stderr)

    def on_batch(stats: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        bar.update(stats.handled - bar.n)

    began = time.perf_counter()
    stats = w.run(max_records=n, idle_exit_s=60, on_batch=on_batch, install_signals=False)
    bar.close()
    assert stats.features == n, f"{label}: {stats.features} features for {n} uploads ({stats.dlq_reasons})"
    return n / (time.perf_counter() - (first[0] if first else began))


def _side(s: Settings, tag: str, uploads: list[UploadV2]) -> Settings:
    side = s.updated({
        "uploads_topic": f"bench-{tag}.uploads", "features_topic": f"bench-{tag}.features", "deferred_topic": f"bench-{tag}.deferred",
        "dlq_topic": f"bench-{tag}.dlq", "group_id": f"bench-{tag}", "dedupe_path": Path(tempfile.mkdtemp(prefix=f"mmfeat-{tag}-")) / "db",
    })  # fmt: skip
    ensure_topics(side, upload_topics(side, 4))
    send_uploads(side, iter(uploads))
    return side


def readers_rates(s: Settings, images: int, clips: int) -> dict[str, Any]:
    """OCR images/s and the ASR real-time factor through Triton (triton_models/ocr and asr), each a batch of requests
    sent at once as the worker sends them; next to the captioner's images/s on the same images."""
    from captioner.world.signs import signs
    from captioner.world.speech import utterances
    from mmfeat.media.audio import AudioLimits, decode_audio, encode_test_audio
    from workers.triton_client import TritonAsr, TritonCaptioner, TritonOcr

    url = s.triton.triton_url or ""
    pngs = [sign.png for sign in signs(images, seed=31)]
    sounds = [decode_audio(encode_test_audio(u.pcm, u.rate), AudioLimits()) for u in utterances(clips, seed=2)]
    out: dict[str, Any] = {"ocr_images": len(pngs), "asr_clips": len(sounds)}
    for name, client, items in (
        ("captioner", TritonCaptioner(url, "captioner_default", timeout_s=600, retries=0), [(p, "") for p in pngs]),
        ("ocr", TritonOcr(url, "ocr", timeout_s=600, retries=0), pngs),
        ("asr", TritonAsr(url, "asr", timeout_s=600, retries=0), sounds),
    ):
        client.call_many(items[:1])  # warm
        began = time.perf_counter()
        results = client.call_many(items)
        took = time.perf_counter() - began
        assert all(not isinstance(r, Exception) for r in results), f"{name}: {results}"
        if name == "asr":
            audio_s = sum(len(b) / 2 / 16000 for b in sounds)
            out["asr_real_time_factor"] = round(took / audio_s, 3)
            out["asr_audio_s"] = round(audio_s, 1)
        else:
            out[f"{name}_images_per_s"] = round(len(items) / took, 2)
        client.close()
    return out


def bench_media(s: Settings, videos: int, rounds: int = 2) -> dict[str, Any]:
    s = s.updated({"triton_model": "captioner_default", "batch_size": 8, "budget_rate_per_s": 1e9, "budget_burst": 10**9})
    made = list(scene_videos(videos, segments=5, seconds=2.0, seed=21))
    limits = media_limits(s)
    began = time.perf_counter()
    sampled = [decode_video(v.data, limits.video) for v in made]
    decode_s = (time.perf_counter() - began) / len(made)
    frames = [png for smp in sampled for _, png in smp.frames]
    distinct = list(dict.fromkeys(frames))
    stamp = now_utc()
    as_videos = [
        UploadV2(schema_version=2, item_id=f"vid-{i:05d}", owner_id="o", media_type="video", media_b64=base64.b64encode(v.data).decode(),
                 created_at=stamp)
        for i, v in enumerate(made)
    ]  # fmt: skip
    as_images = [
        UploadV2(schema_version=2, item_id=f"frame-{i:05d}", owner_id="o", media_type="image", media_b64=base64.b64encode(png).decode(),
                 created_at=stamp)
        for i, png in enumerate(distinct)
    ]  # fmt: skip
    kind_of("image").prepare(distinct[0], limits)  # the frames are images the image kind accepts as they are
    runs: list[dict[str, float]] = []
    for r in range(rounds):  # alternate the order, so neither side always runs on a warmer Triton
        order = ["videos", "images"] if r % 2 == 0 else ["images", "videos"]
        got: dict[str, float] = {}
        for side in order:
            ups = as_videos if side == "videos" else as_images
            rate = _worker_rate(_side(s, f"{side}-{r}-{time.time_ns()}", ups), len(ups), side)
            got[side] = rate * (len(distinct) / len(as_videos)) if side == "videos" else rate  # videos/s -> frames captioned/s
        runs.append({"video_frames_per_s": round(got["videos"], 2), "image_frames_per_s": round(got["images"], 2),
                     "ratio": round(got["videos"] / got["images"], 3)})  # fmt: skip
    readers = readers_rates(s, 8 if videos < 20 else 24, 4 if videos < 20 else 12)
    return {
        "videos": len(made), "sampled_frames": len(frames), "distinct_frames": len(distinct), "readers": readers,
        "runs": runs, "ratio": round(statistics.median(r["ratio"] for r in runs), 3), "goal_ratio": 0.8,
        "decode_ms_per_video": round(decode_s * 1000, 1),
        "notes": "scene videos of 5 segments x 2 s at 4 fps, 224x224, mpeg4; trained default captioner on Triton (CPU); "
                 "side A: video uploads (sandboxed decode + sampling + captioning the distinct frames); side B: those "
                 "distinct frames as PNG image uploads; fresh dedupe store per side; frames/s = distinct frames captioned "
                 "per second of worker time from its first micro-batch",
    }  # fmt: skip
