"""Videos, text posts and hostile media through the real broker and the real Triton server: the trained
default captioner captions each distinct sampled frame once, in the worker's one call per micro-batch."""

from __future__ import annotations

import io
import json
from pathlib import Path

from captioner.evaluation.quality import mentioned
from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import load_vocabulary
from captioner.world.videos import scene_videos
from mmfeat.cli.produce import send_uploads
from mmfeat.media import kind_of
from mmfeat.normalize import normalize_caption
from mmfeat.schemas import H_SCHEMA, DlqRecordV1, FeatureRecordV2
from mmfeat.settings import DEFAULT_CAPTIONER, Settings
from tests.integration.conftest import Stack, by_key, committed_lag, records, run_cli
from workers.worker import BackgroundWorker, media_limits


def _folder(root: Path) -> dict[str, set[str]]:
    """A folder as a person would have it: three scene videos (one with a caption file), a text post, an
    image, and junk under media names. Returns each video's file name -> the objects it shows."""
    root.mkdir()
    shown = {}
    for i, video in enumerate(scene_videos(3, seed=5)):
        (root / f"clip{i}.mp4").write_bytes(video.data)
        shown[f"clip{i}.mp4"] = video.names
    (root / "clip0.txt").write_text("Morning at the farm #FarmLife @someone https://example.com/x")
    (root / "post.txt").write_text("Sunday market: fresh bread and #LocalApples")
    video = next(scene_videos(1, seed=6))
    video.images[0].save(root / "cover.png")
    (root / "random.mp4").write_bytes(bytes(range(256)) * 64)  # random bytes named .mp4: a video by name, not content
    (root / "truncated.mp4").write_bytes(video.data[: len(video.data) // 3])  # an MP4 by content, truncated
    return shown


def test_a_folder_of_media_becomes_one_outcome_per_file(settings: Settings, tmp_path: Path) -> None:
    s = settings.updated({"triton_model": "captioner_default"})
    shown = _folder(tmp_path / "media")
    listed = run_cli(s, "produce", "--media", str(tmp_path / "media"), "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    sent = {o["file"]: o for o in map(json.loads, listed.stdout.splitlines())}
    # kinds come from content: random.mp4 is skipped (not a video by its bytes), truncated.mp4 is sent as one
    assert {f: o["media_type"] for f, o in sent.items()} == {
        "clip0.mp4": "video", "clip1.mp4": "video", "clip2.mp4": "video", "cover.png": "image", "post.txt": "text",
        "truncated.mp4": "video",
    }  # fmt: skip
    assert "skipped" in listed.stderr and "random.mp4" in listed.stderr

    stats = BackgroundWorker(s, max_records=len(sent), idle_exit_s=60).join(240)
    assert (stats.features, stats.deferred, stats.dlq) == (5, 0, 1)
    feats = {k: FeatureRecordV2.model_validate_json(r.value or b"") for k, r in by_key(records(s, s.topics.features_topic)).items()}
    item = {f: o["item_id"] for f, o in sent.items()}
    assert set(feats) == {item[f] for f in sent if f != "truncated.mp4"}
    assert all(r.headers[H_SCHEMA] == "2" for r in records(s, s.topics.features_topic))
    dlq = [DlqRecordV1.model_validate_json(r.value or b"") for r in records(s, s.topics.dlq_topic)]
    assert [(d.item_id, d.reason) for d in dlq] == [(item["truncated.mp4"], "not_a_video")]
    assert committed_lag(s) == 0

    # Each video: its sampled frames, each captioned by the model as it captions that frame offline, and the
    # merged description naming most of the objects its scenes show (a sanity floor on a small fixed set).
    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    names = sorted(load_vocabulary())
    found = total = 0
    for f, objects in shown.items():
        rec = feats[item[f]]
        assert rec.media_type == "video" and len(rec.frames) == s.media.video_frames
        frames = kind_of("video").prepare((tmp_path / "media" / f).read_bytes(), media_limits(s)).images
        offline = runtime.caption([runtime.decode(png, s.fetch.max_pixels) for _, png in frames], [""] * len(frames))
        assert [fr.caption for fr in rec.frames] == [normalize_caption(c.text) for c in offline]
        assert [fr.t_s for fr in rec.frames] == [t for t, _ in frames]
        found += len(mentioned(rec.sources["caption"].text, names) & objects)
        total += len(objects)
    assert found / total >= 0.6, f"{found}/{total} objects named in the merged descriptions"
    assert feats[item["clip0.mp4"]].sources["post_text"].text == "morning at the farm life"  # "farm farm" is a stutter
    post = feats[item["post.txt"]]
    assert set(post.sources) == {"post_text"} and post.sources["post_text"].text == "sunday market fresh bread and local apples"
    assert feats[item["cover.png"]].frames == [] and set(feats[item["cover.png"]].sources) == {"caption"}

    tail = run_cli(s, "tail", s.topics.features_topic, "--max", "5")
    assert tail.returncode == 0 and "post_text: 'sunday market" in tail.stdout and " s: '" in tail.stdout  # frames shown


def test_on_screen_text_is_read_on_images_and_video_frames_once_each(settings: Settings, tmp_path: Path) -> None:
    """OCR on (MMFEAT_OCR_MODEL=ocr, the model from triton_models/ocr): an image with a sign and a video whose
    frames carry a burnt-in line both get an ``ocr`` source with the words; a picture without text gets none."""
    import base64

    from PIL import Image

    from captioner.world.signs import signs
    from mmfeat.media.video import encode_test_video
    from mmfeat.schemas import UploadV2, now_utc

    s = settings.updated({"triton_model": "captioner_default", "ocr_model": "ocr"})
    sign = next(signs(1, seed=8))
    video = next(scene_videos(1, seed=9))
    backdrop = Image.open(io.BytesIO(sign.png)).convert("RGB").resize((224, 224))
    frames = [backdrop] * 4 + [video.images[0].convert("RGB")] * 4  # the sign, then a scene with no text
    blank = Image.new("RGB", (64, 64), (240, 240, 240))
    cases = {"sign": ("image", sign.png), "clip": ("video", encode_test_video(frames, fps=4)), "blank": ("image", _png(blank))}
    ups = [
        UploadV2(
            schema_version=2, item_id=k, owner_id="o", media_type=kind, media_b64=base64.b64encode(data).decode(), created_at=now_utc()
        )
        for k, (kind, data) in cases.items()
    ]
    send_uploads(s, iter(ups))
    stats = BackgroundWorker(s, max_records=len(ups), idle_exit_s=60).join(240)
    assert (stats.features, stats.dlq, stats.deferred) == (3, 0, 0)
    feats = {k: FeatureRecordV2.model_validate_json(r.value or b"") for k, r in by_key(records(s, s.topics.features_topic)).items()}
    words = set(sign.words)
    for key in ("sign", "clip"):
        read = set(feats[key].sources["ocr"].text.split())
        assert len(words & read) >= 0.6 * len(words), (key, sign.words, read)
        assert feats[key].model_versions["ocr"].startswith("rapidocr-")
    assert "ocr" not in feats["blank"].sources and "ocr" in feats["blank"].model_versions  # read, and nothing on it


def _png(img: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # type: ignore[attr-defined]
    return buf.getvalue()


def test_speech_in_audio_uploads_and_video_tracks_is_transcribed_as_offline(settings: Settings) -> None:
    """ASR on (MMFEAT_ASR_MODEL=asr, triton_models/asr): an audio upload and a video with a spoken sound track each
    get an ``asr`` source whose transcript is the engine's, offline, on the same decoded sound."""
    import base64

    import numpy as np

    from captioner.world.speech import speak
    from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
    from mmfeat.media.video import encode_test_video
    from mmfeat.normalize import normalize_post_text
    from mmfeat.schemas import UploadV2, now_utc
    from readers.asr import PocketSphinx

    s = settings.updated({"triton_model": "captioner_default", "asr_model": "asr"})
    u = speak("a young woman is holding a small boat near the river")
    sound = encode_test_audio(u.pcm, u.rate)
    pcm = decode_sound(sound, AudioLimits())
    video = next(scene_videos(1, seed=12))
    clip = encode_test_video([img.convert("RGB") for img in video.images for _ in range(6)], fps=4, audio=np.frombuffer(pcm, "<i2"))
    cases = {"spoken": ("audio", sound), "talking": ("video", clip)}
    ups = [
        UploadV2(schema_version=2, item_id=k, owner_id="o", media_type=kind, media_b64=base64.b64encode(b).decode(), created_at=now_utc())
        for k, (kind, b) in cases.items()
    ]
    send_uploads(s, iter(ups))
    stats = BackgroundWorker(s, max_records=len(ups), idle_exit_s=60).join(240)
    assert (stats.features, stats.dlq, stats.deferred) == (2, 0, 0)
    feats = {k: FeatureRecordV2.model_validate_json(r.value or b"") for k, r in by_key(records(s, s.topics.features_topic)).items()}
    engine = PocketSphinx()
    assert feats["spoken"].sources["asr"].raw == engine.transcribe(np.frombuffer(pcm, "<i2"))
    assert feats["spoken"].sources["asr"].text == normalize_post_text(feats["spoken"].sources["asr"].raw)
    assert set(feats["spoken"].sources) == {"asr"} and feats["spoken"].model_versions == {"asr": engine.version}
    track = kind_of("video").prepare(clip, media_limits(s)).audio or b""
    assert feats["talking"].sources["asr"].raw == engine.transcribe(np.frombuffer(track, "<i2"))
    assert {"caption", "asr"} <= set(feats["talking"].sources)


def test_a_whisper_directory_serves_through_the_same_asr_contract(settings: Settings, stack: Stack) -> None:
    """The tiny untrained Whisper as Triton model asr_whisper: its transcripts are the offline engine's."""
    import base64

    import numpy as np

    from captioner.world.speech import speak
    from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
    from mmfeat.schemas import UploadV2, now_utc
    from readers.asr import Whisper

    s = settings.updated({"asr_model": "asr_whisper"})
    u = speak("the dog found a red ball in the garden")
    sound = encode_test_audio(u.pcm, u.rate)
    up = UploadV2(
        schema_version=2, item_id="w1", owner_id="o", media_type="audio", media_b64=base64.b64encode(sound).decode(), created_at=now_utc()
    )
    send_uploads(s, iter([up]))
    stats = BackgroundWorker(s, max_records=1, idle_exit_s=60).join(180)
    assert stats.features == 1
    rec = FeatureRecordV2.model_validate_json(by_key(records(s, s.topics.features_topic))["w1"].value or b"")
    engine = Whisper(stack.settings.services.state_dir / "whisper-untrained")
    pcm = np.frombuffer(decode_sound(sound, AudioLimits()), "<i2")
    assert rec.model_versions == {"asr": engine.version} and rec.sources["asr"].raw == engine.transcribe(pcm)
