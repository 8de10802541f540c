"""`mmfeat eval-media`: how well a video's merged description names what its scenes show, against naive
baselines, on scene videos made offline (captioner/world/videos.py).

The streaming path's own functions run here: the sandboxed decode and sampling (mmfeat.media.video), the
captioner runtime Triton serves, and the feature builder's merge (mmfeat.features.merged_caption).
Systems compared, each on the same videos and the same captioner:
- ``sampled`` (what the worker does): scene starts plus uniform frames, captions merged;
- ``uniform``: the same number of evenly spaced frames, no scene detection;
- ``cover``: the first frame only, as a system that captions a video's cover image would.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from captioner.evaluation.quality import mentioned
from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import load_vocabulary
from captioner.world.videos import SceneVideo, scene_videos
from mmfeat.features import merged_caption
from mmfeat.media.video import VideoLimits, decode_video


def _recall(texts: list[str], videos: list[SceneVideo], names: list[str]) -> dict[str, float]:
    found = sum(len(mentioned(t, names) & v.names) for t, v in zip(texts, videos, strict=True))
    total = sum(len(v.names) for v in videos)
    segs = [sum(bool(mentioned(t, names) & set(s.names)) for s in v.segments) / len(v.segments) for t, v in zip(texts, videos, strict=True)]
    return {"object_recall": round(found / total, 4), "segment_coverage": round(float(np.mean(segs)), 4)}


SETS = {"even": {"segments": 3, "uneven": False}, "uneven": {"segments": 6, "uneven": True}}  # 3 x 2 s; 6 of 0.5-3 s


def evaluate_videos(model_dir: Path, out_dir: Path, *, n: int = 30, frames: int = 5, seed: int = 77, ocr: bool = True) -> dict[str, Any]:
    runtime = CaptionerRuntime(model_dir)
    results: dict[str, Any] = {"model": runtime.version, "videos_per_set": n, "frames": frames, "sets": {}}
    for name, shape in SETS.items():
        videos = list(scene_videos(n, segments=int(shape["segments"]), uneven=bool(shape["uneven"]), seed=seed))
        results["sets"][name] = _evaluate_set(runtime, videos, VideoLimits(frames=frames), out_dir if name == "even" else None)
        results["sets"][name]["segments_per_video"] = shape["segments"]
    if ocr:
        from readers.evaluation import evaluate_asr, evaluate_ocr  # a stage beside this one: the readers as Triton serves them

        results["ocr"] = evaluate_ocr()
        results["asr"] = evaluate_asr()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "media_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _evaluate_set(runtime: CaptionerRuntime, videos: list[SceneVideo], limits: VideoLimits, grid_dir: Path | None) -> dict[str, Any]:
    names = sorted(load_vocabulary())
    n = len(videos)
    systems: dict[str, list[list[tuple[float, bytes]]]] = {"sampled": [], "uniform": [], "cover": []}
    for v in tqdm(videos, desc="decode", unit="video", file=sys.stderr):
        systems["sampled"].append(decode_video(v.data, limits).frames)
        no_scenes = replace(limits, scene_threshold=2.0)  # no frame but the first is a scene start
        systems["uniform"].append(decode_video(v.data, no_scenes).frames)
        systems["cover"].append(systems["sampled"][-1][:1])
    results: dict[str, Any] = {}
    grid: list[tuple[bytes, str]] = []
    for system, per_video in systems.items():
        texts, requests = [], 0
        for sampled in tqdm(per_video, desc=system, unit="video", file=sys.stderr):
            distinct = list(dict.fromkeys(png for _, png in sampled))
            requests += len(distinct)
            images = [runtime.decode(png, 10**8) for png in distinct]  # as the served model decodes a request
            caps = dict(zip(distinct, runtime.caption(images, [""] * len(images)), strict=True))
            _, text = merged_caption([(t, caps[png]) for t, png in sampled], 32, 64)
            texts.append(text)
            if system == "sampled" and len(grid) < 10:
                grid += [(png, f"{t:.1f} s: {caps[png].text}") for t, png in sampled][: 10 - len(grid)]
        results[system] = {**_recall(texts, videos, names), "captioner_requests_per_video": round(requests / n, 2)}
    if grid_dir is not None:
        from mmfeat.cli.render import caption_grid

        caption_grid(grid, grid_dir / "media_frames.png", cols=5, tile=180)
    return results
