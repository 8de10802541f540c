"""A corpus of content embeddings: rendered training-split scenes through the captioner's own call (the served
path's ``CaptionerRuntime.caption``), for training the semantic-ID codebook (`mmfeat train-tokenizers`)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np

from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import DrawingCache, load_vocabulary, make_splits, scenes


def embedding_corpus(
    n: int, seed: int, model_dir: Path, *, batch: int = 32, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, str]:
    """``n`` scenes' embeddings, [n, dim] float32 (what the captioner publishes, float16 values), and the
    captioner version that made them."""
    runtime = CaptionerRuntime(model_dir)
    spec = make_splits(load_vocabulary()).train
    images = (image for image, _ in scenes(spec, n, seed=seed, cache=DrawingCache()))
    rows: list[np.ndarray] = []
    while chunk := list(islice(images, batch)):
        rows += [c.embedding_array() for c in runtime.caption(chunk, [""] * len(chunk))]
        if progress:
            progress(len(rows))
    if not rows or not len(rows[0]):
        raise ValueError(f"captioner {runtime.version} returns no content embedding")
    return np.stack(rows).astype(np.float32), runtime.version
