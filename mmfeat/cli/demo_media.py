"""The demo's multimedia part: a folder made offline (scene videos, one with speech on its sound track,
spoken clips, images with text on them, a text post), uploaded the way `mmfeat produce --media` does, read
by the captioner, OCR and ASR, and each upload's sources printed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mmfeat.cli.produce import media_uploads
from mmfeat.kafka.reader import read_topic
from mmfeat.schemas import FeatureRecordV2, parse_feature_record
from mmfeat.settings import Settings
from mmfeat.untrusted import clean

console = Console(width=None if sys.stdout.isatty() else 160)


def make_media_folder(folder: Path, seed: int) -> None:
    from captioner.world.signs import signs
    from captioner.world.speech import speak
    from captioner.world.videos import scene_videos
    from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
    from mmfeat.media.video import encode_test_video

    folder.mkdir(parents=True, exist_ok=True)
    videos = list(scene_videos(3, seed=seed))
    for i, v in enumerate(videos[:2]):
        (folder / f"scenes-{i}.mp4").write_bytes(v.data)
    (folder / "scenes-0.txt").write_text("Three little stories #ClipArt #Sunday")
    said = speak("the children are playing with a red ball in the park")
    pcm = np.frombuffer(decode_sound(encode_test_audio(said.pcm, said.rate), AudioLimits()), "<i2")
    frames = [img.convert("RGB") for img in videos[2].images for _ in range(6)]
    (folder / "talking.mp4").write_bytes(encode_test_video(frames, fps=4, audio=pcm))
    for i, text in enumerate(("a young woman bought a green apple", "the old man is painting a small boat")):
        u = speak(text)
        (folder / f"voice-{i}.wav").write_bytes(encode_test_audio(u.pcm, u.rate))
    for i, sign in enumerate(signs(2, seed=seed)):
        (folder / f"sign-{i}.png").write_bytes(sign.png)
    (folder / "post.txt").write_text("Fresh bread at the #SundayMarket, come early! https://example.com/market")


def demo_media(s: Settings, folder: Path, *, seed: int) -> None:
    from mmfeat.cli.demo import caption_uploads

    console.rule("videos, speech and on-screen text")
    make_media_folder(folder, seed)
    pairs = list(media_uploads(folder, inline=False, prefix="media"))
    s = s.updated({"ocr_model": "ocr", "asr_model": "asr", "allowed_roots": [*s.fetch.allowed_roots, folder.resolve()]})
    stats, _ = caption_uploads(s, [u for u, _ in pairs], rate=10.0)
    names = {u.item_id: (src.name, u.media_type) for u, src in pairs}
    table = Table(title=f"{stats.features} of {len(pairs)} uploads of {folder} (each source's normalized text)", show_lines=True)
    for col in ("item", "file", "kind", "caption", "on-screen text (ocr)", "speech (asr)", "post text"):
        table.add_column(col, overflow="fold")
    for rec in sorted(read_topic(s, s.topics.features_topic, timeout_s=5), key=lambda r: r.key or ""):
        if rec.key not in names:
            continue
        value = parse_feature_record(rec.value or b"")
        if not isinstance(value, FeatureRecordV2):
            continue
        text = {k: clean(src.text, 200) for k, src in value.sources.items()}
        name, kind = names[rec.key]
        table.add_row(rec.key, name, kind, *(text.get(k, "") for k in ("caption", "ocr", "asr", "post_text")))
    console.print(table)
    console.print(f"media: {stats.features} features, {stats.deferred} deferred, {stats.dlq} DLQ {stats.dlq_reasons}")
