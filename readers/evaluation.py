"""OCR word accuracy on text rendered here (captioner/world/signs.py), against a naive baseline (the same
recognizer run on the whole image as one line, without text detection); ASR word error rate on sentences
espeak-ng speaks, against decoding the whole recording after naive resampling."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import numpy as np
from tqdm import tqdm

from captioner.world.clipart import DrawingCache, load_vocabulary, make_splits, scenes
from captioner.world.signs import Sign, signs
from mmfeat.media.image import decode_rgb
from mmfeat.normalize import normalize_post_text
from mmfeat.triton_contract import AUDIO_RATE
from readers.asr import PocketSphinx
from readers.ocr import OcrRuntime


def _score(read: list[str], truth: list[list[str]]) -> dict[str, float]:
    hit = got = want = 0
    for text, words in zip(read, truth, strict=True):
        seen, expected = Counter(normalize_post_text(text).split()), Counter(words)
        hit += sum((seen & expected).values())
        got += sum(seen.values())
        want += sum(expected.values())
    return {"word_recall": round(hit / want, 4), "word_precision": round(hit / max(got, 1), 4)}


def evaluate_ocr(n: int = 40, seed: int = 5) -> dict[str, Any]:
    ocr = OcrRuntime()
    naive_ocr = OcrRuntime()  # its own engine: RapidOCR keeps a call's use_det=False for the calls after it
    backdrops = [img for img, _ in scenes(make_splits(load_vocabulary()).train, 8, seed, DrawingCache())]
    sets: dict[str, list[Sign]] = {
        "plain": list(signs(n, seed=seed)),
        "over_scenes": [s for k in range(n // 8) for s in signs(8, seed=seed * 100 + k, backdrop=backdrops[k % len(backdrops)])],
    }
    out: dict[str, Any] = {"model": ocr.version, "sets": {}}
    for name, items in sets.items():
        truth = [s.words for s in items]
        began = time.perf_counter()
        read = [ocr.read(s.png) for s in tqdm(items, desc=f"ocr {name}", unit="image", file=sys.stderr)]
        per_s = len(items) / (time.perf_counter() - began)
        naive = []
        for s in tqdm(items, desc=f"whole-image {name}", unit="image", file=sys.stderr):
            res = naive_ocr.engine(np.asarray(decode_rgb(s.png, ocr.s.max_pixels, ocr.s.max_side)), use_det=False, use_cls=False)
            naive.append(" ".join(getattr(res, "txts", None) or ()))
        out["sets"][name] = {"images": len(items), "rapidocr": {**_score(read, truth), "images_per_s": round(per_s, 2)},
                             "recognizer_only": _score(naive, truth)}  # fmt: skip
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, reference words): word-level Levenshtein."""
    r, h = reference.split(), hypothesis.split()
    row = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(h) + 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return row[-1], len(r)


def _naive_pcm(pcm: bytes, rate: int) -> np.ndarray:
    """Linear interpolation to 16 kHz: no anti-aliasing filter (the baseline's resampling)."""
    x = np.frombuffer(pcm, "<i2").astype(np.float32)
    return np.interp(np.linspace(0, len(x) - 1, int(len(x) * AUDIO_RATE / rate)), np.arange(len(x)), x).astype(np.int16)


def evaluate_asr(n: int = 30, seed: int = 1) -> dict[str, Any]:
    """Word error rate on sentences espeak-ng speaks (eval seed 1; settings were looked at on seed 0 only), alone
    and as the sound track of a scene video, through the served path (the sandboxed decode, FFmpeg's resampler,
    voiced segments); the baseline decodes the whole recording at once after naive resampling."""
    from captioner.world.speech import utterances
    from captioner.world.videos import scene_videos
    from mmfeat.media.audio import AudioLimits, decode_audio, encode_test_audio
    from mmfeat.media.video import VideoLimits, decode_video, encode_test_video

    engine = PocketSphinx()
    said = list(utterances(n, seed))
    video = next(scene_videos(1, seed=seed))
    totals = {"ours": [0, 0], "naive": [0, 0], "ours_in_video": [0, 0]}
    seconds = busy = 0.0
    examples: list[dict[str, str]] = []
    for u in tqdm(said, desc="asr", unit="sentence", file=sys.stderr):
        pcm = decode_audio(encode_test_audio(u.pcm, u.rate), AudioLimits())
        began = time.perf_counter()
        hyp = engine.transcribe(np.frombuffer(pcm, "<i2"))
        busy += time.perf_counter() - began
        seconds += len(pcm) / 2 / AUDIO_RATE
        naive = engine.transcribe_whole(_naive_pcm(u.pcm, u.rate))
        frames = [img.convert("RGB") for img in video.images for _ in range(8)]
        track = np.frombuffer(decode_audio(encode_test_audio(u.pcm, u.rate), AudioLimits()), "<i2")
        clip = decode_video(encode_test_video(frames, fps=4, audio=track), VideoLimits()).audio or b""
        in_video = engine.transcribe(np.frombuffer(clip, "<i2"))
        if len(examples) < 5:
            examples.append({"said": u.text, "heard": hyp, "heard_whole_recording": naive, "heard_in_video": in_video})
        for key, text in (("ours", hyp), ("naive", naive), ("ours_in_video", in_video)):
            e, w = word_errors(u.text, text)
            totals[key][0] += e
            totals[key][1] += w
    return {
        "model": engine.version, "sentences": n, "voice": "espeak-ng en-us, 150 words/min",
        **{k: {"wer": round(e / w, 4)} for k, (e, w) in totals.items()},
        "real_time_factor": round(busy / seconds, 3),
        "examples": examples,
    }  # fmt: skip
