"""Semantic IDs: residual K-means (RQ-KMeans) codes of a content embedding.

Level 1 clusters the embeddings into K codes; level l clusters what the levels before it left unexplained
(the residuals), so an item's code sequence (c1, ..., cL) names a coarse-to-fine cell of the embedding space
and similar items share prefixes. OneRec found RQ-KMeans better balanced and more stable than RQ-VAE, whose
codebooks often collapse; here it is plain Lloyd iterations from a k-means++ start, in float64, seeded and
single-threaded, so training is reproducible byte for byte.

Two id lists come out of one code sequence (mmfeat/tokenizers/semantic.py publishes both):

    codes     one id per level, with per-level offsets: level l's code c is l*K + c        ids in [0, L*K)
    prefixes  one id per code prefix: (c1), (c1, c2), ..., each prefix numbered in base K
              after the prefixes of the levels before it                              ids in [0, K + K^2 + ... + K^L)

The codebook file is JSON (its meta plus the centroids as float32 little-endian, base64); its sha256 is
in the tokenizers' versions, so a new codebook is a new feature version.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CODEBOOK_FILE = "sid-codebook.json"


@dataclass(frozen=True)
class Codebook:
    centroids: np.ndarray  # [levels, K, dim] float32
    captioner_version: str  # whose embedding space it quantizes
    corpus: dict[str, Any]  # what it was trained on (size, seed, sha256 of the embeddings)
    digest: str = ""  # sha256 prefix of the file it was read from

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def size(self) -> int:
        """K: codes per level."""
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[2])

    @property
    def shape(self) -> str:
        return f"rq{self.levels}x{self.size}"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """[N, dim] embeddings -> [N, levels] codes (each level's nearest centroid to the residual left so far)."""
        _, codes = residual_levels(np.reshape(x, (-1, self.dim)), self.levels, lambda level, _: self.centroids[level].astype(np.float64))
        return codes

    def reconstruct(self, codes: np.ndarray, levels: int | None = None) -> np.ndarray:
        """The sum of the first ``levels`` levels' centroids of each code sequence."""
        n = self.levels if levels is None else levels
        return sum((self.centroids[level].astype(np.float64)[codes[:, level]] for level in range(n)), np.zeros((len(codes), self.dim)))

    def to_bytes(self) -> bytes:
        meta = {
            "format": "mmfeat-rq-kmeans-1", "levels": self.levels, "codes": self.size, "dim": self.dim,
            "captioner_version": self.captioner_version, "corpus": self.corpus,
            "centroids_f32le_b64": base64.b64encode(self.centroids.astype("<f4").tobytes()).decode(),
        }  # fmt: skip
        return (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Codebook:
        meta = json.loads(data)
        if meta.get("format") != "mmfeat-rq-kmeans-1":
            raise ValueError(f"not an RQ-KMeans codebook (format {meta.get('format')!r})")
        raw = np.frombuffer(base64.b64decode(meta["centroids_f32le_b64"]), dtype="<f4")
        centroids = raw.reshape(meta["levels"], meta["codes"], meta["dim"]).astype(np.float32)
        return cls(centroids, meta["captioner_version"], meta["corpus"], hashlib.sha256(data).hexdigest()[:8])

    @classmethod
    def load(cls, path: Path) -> Codebook:
        return cls.from_bytes(path.read_bytes())


def residual_levels(
    x: np.ndarray, levels: int, centroids_of: Callable[[int, np.ndarray], np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Residual quantization, the one loop that encoding, training and the random baseline share: at each level
    ``centroids_of(level, residual)`` gives the level's centroids, each row takes its nearest, and what that
    centroid leaves is the next level's residual. Returns the levels' centroids and each row's codes."""
    residual = np.asarray(x, dtype=np.float64).copy()
    books, codes = [], np.empty((len(residual), levels), dtype=np.int64)
    for level in range(levels):
        c = centroids_of(level, residual)
        codes[:, level] = nearest(residual, c)
        residual -= c[codes[:, level]]
        books.append(c)
    return books, codes


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's nearest centroid (squared Euclidean; ties to the lowest index)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.argmin(d, axis=1)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means from a k-means++ start: [k, dim] centroids. A cluster left empty takes the point worst
    served by its centroid, so every code stays in use while there are more distinct points than codes."""
    n = len(x)
    if n < k:
        raise ValueError(f"{n} embeddings cannot train {k} codes")
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(n)]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centroids[j] = x[pick]
        d2 = np.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    for _ in range(iters):
        assign = nearest(x, centroids)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        err = ((x - moved[assign]) ** 2).sum(1)
        for j in np.flatnonzero(counts == 0):
            worst = int(np.argmax(err))
            moved[j], err[worst] = x[worst], 0.0
        if np.array_equal(moved, centroids):
            break
        centroids = moved
    return centroids


def train_codebook(
    embeddings: np.ndarray, *, levels: int, codes: int, seed: int, captioner_version: str, corpus: dict[str, Any], iters: int = 30
) -> Codebook:
    """Residual K-means: each level's k-means on the residuals the levels before it left."""
    x = np.asarray(embeddings, dtype=np.float64)
    rng = np.random.default_rng(seed)
    books, _ = residual_levels(x, levels, lambda _, residual: kmeans(residual, codes, rng, iters))
    digest = hashlib.sha256(np.ascontiguousarray(x.astype("<f4")).tobytes()).hexdigest()[:16]
    meta = {**corpus, "n": len(x), "seed": seed, "embeddings_sha256": digest}
    return Codebook(np.stack(books).astype(np.float32), captioner_version, meta)


def code_ids(codes: np.ndarray, k: int) -> list[int]:
    """One code sequence -> its per-level ids: level l's code c is l*K + c."""
    return [level * k + int(c) for level, c in enumerate(codes)]


def prefix_ids(codes: np.ndarray, k: int) -> list[int]:
    """One code sequence -> one id per prefix: prefix (c1..cl) is its base-K number after all shorter prefixes."""
    out, offset, number = [], 0, 0
    for level, c in enumerate(codes):
        number = number * k + int(c)
        out.append(offset + number)
        offset += k ** (level + 1)
    return out


def prefix_vocab(levels: int, k: int) -> int:
    return sum(k ** (level + 1) for level in range(levels))


def quality(book: Codebook, x: np.ndarray) -> dict[str, Any]:
    """How well ``book`` quantizes ``x``: per level, the share of codes in use and the usage perplexity over K
    (1.0: all codes used equally); the share of items whose full code sequence is theirs alone; and the
    relative quantization error after each level (mean squared residual / mean squared norm)."""
    x = np.asarray(x, dtype=np.float64)
    codes = book.encode(x)
    norm = float((x * x).sum(1).mean())
    per_level = []
    for level in range(book.levels):
        counts = np.bincount(codes[:, level], minlength=book.size)
        p = counts[counts > 0] / len(codes)
        residual = x - book.reconstruct(codes, level + 1)
        per_level.append(
            {
                "codes_used": float((counts > 0).mean()),
                "perplexity_share": float(np.exp(-(p * np.log(p)).sum()) / book.size),
                "largest_code_share": float(counts.max() / len(codes)),
                "relative_error": float((residual * residual).sum(1).mean() / norm),
            }
        )
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return {
        "shape": book.shape, "items": len(x), "levels": per_level,
        "unique_full_code_share": float((counts[inverse.reshape(-1)] == 1).mean()),
        "relative_error": per_level[-1]["relative_error"],
    }  # fmt: skip


SHAPES: tuple[tuple[int, int], ...] = tuple((levels, k) for levels in (2, 3, 4) for k in (16, 32, 64, 128, 256))


def sweep(
    train: np.ndarray, heldout: np.ndarray, captioner_version: str, shapes: tuple[tuple[int, int], ...] = SHAPES
) -> list[dict[str, Any]]:
    """Each (levels, K) trained on ``train`` and measured on it and on ``heldout`` (embeddings it never saw):
    the figures a codebook's shape is chosen by. The naive baseline of each shape is a codebook of K random
    training residuals per level, no k-means (what the iterations buy)."""
    out = []
    for levels, k in shapes:
        book = train_codebook(train, levels=levels, codes=k, seed=0, captioner_version=captioner_version, corpus={})
        naive = random_codebook(train, levels=levels, codes=k, seed=0, captioner_version=captioner_version)
        out.append({
            "shape": book.shape, "levels": levels, "codes": k, "train": quality(book, train), "heldout": quality(book, heldout),
            "heldout_random_codebook": quality(naive, heldout),
        })  # fmt: skip
    return out


def random_codebook(embeddings: np.ndarray, *, levels: int, codes: int, seed: int, captioner_version: str) -> Codebook:
    """The naive baseline: each level's centroids are ``codes`` random rows of the residuals the levels before left."""
    rng = np.random.default_rng(seed)
    books, _ = residual_levels(embeddings, levels, lambda _, residual: residual[rng.choice(len(residual), codes, replace=False)].copy())
    return Codebook(np.stack(books).astype(np.float32), captioner_version, {"baseline": "random rows"})


def plot_sweep(points: list[dict[str, Any]], chosen: str, path: Path) -> None:
    """Held-out quantization error and unique-code share per shape; the committed shape marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for levels in sorted({p["levels"] for p in points}):
        row = [p for p in points if p["levels"] == levels]
        ks = [p["codes"] for p in row]
        axes[0].plot(ks, [p["heldout"]["relative_error"] for p in row], "o-", label=f"{levels} levels")
        axes[1].plot(ks, [p["heldout"]["unique_full_code_share"] for p in row], "o-", label=f"{levels} levels")
    pick = next(p for p in points if p["shape"] == chosen)
    axes[0].plot([pick["codes"]], [pick["heldout"]["relative_error"]], "r*", ms=14, label=f"committed {chosen}")
    axes[1].plot([pick["codes"]], [pick["heldout"]["unique_full_code_share"]], "r*", ms=14)
    axes[0].set_ylabel("held-out relative quantization error")
    axes[1].set_ylabel("held-out items with a unique full code")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codes per level (K)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
