"""Videos made offline from clip-art scenes the captioner knows: each video is a few segments, one scene
each, so which objects a video shows (and when) is known. The tests', the benchmark's and the demo's.

A segment holds its scene for ``seconds`` with a small drift (the scene shifts a pixel now and then, as a
real shot is never perfectly still), so the decoder sees P-frames and the sampler sees near-duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from captioner.world.clipart import DrawingCache, Scene, load_vocabulary, make_splits, scenes
from mmfeat.media.video import encode_test_video


@dataclass(frozen=True)
class SceneVideo:
    data: bytes
    segments: list[Scene]  # in order, one per segment
    images: list[Image.Image]  # the segments' scenes as drawn
    seconds: list[float]  # of each segment

    @property
    def names(self) -> set[str]:
        return {n for s in self.segments for n in s.names}


def _drift(img: Image.Image, k: int) -> Image.Image:
    if k % 3 == 0:
        return img
    canvas = Image.new("RGB", img.size, "white")
    canvas.paste(img, (k % 2, 0))
    return canvas


def scene_videos(
    n: int, *, segments: int = 3, seconds: float = 2.0, fps: int = 4, seed: int = 0, held_out: bool = True, uneven: bool = False
) -> Iterator[SceneVideo]:
    """``n`` videos of ``segments`` scenes each (by default new compositions: two objects in a relation, a
    pair the captioner never saw together, as in its held-out evaluation)."""
    splits = make_splits(load_vocabulary(), seed=0)
    spec, kinds = (splits.new_compositions, ["relation", "action"]) if held_out else (splits.train, None)
    drawn = list(scenes(spec, n * segments, seed, DrawingCache(), kinds=kinds))
    lengths = random.Random(seed * 7919 + 1)
    for v in range(n):
        part = drawn[v * segments : (v + 1) * segments]
        secs = [round(lengths.uniform(0.5, 3.0) if uneven else seconds, 2) for _ in part]
        frames = [_drift(img.convert("RGB"), k) for (img, _), sec in zip(part, secs, strict=True) for k in range(max(1, round(sec * fps)))]
        yield SceneVideo(encode_test_video(frames, fps=fps), [s for _, s in part], [img for img, _ in part], secs)
