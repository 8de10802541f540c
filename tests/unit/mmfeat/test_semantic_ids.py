"""Semantic IDs (tokenizer C): residual K-means, its two id lists, the codebook file, and the tokenizer's refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.errors import RecordError
from mmfeat.semantic_ids import Codebook, code_ids, kmeans, nearest, prefix_ids, prefix_vocab, quality, train_codebook
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import TOKENIZERS, load_tokenizers, published_by_default
from mmfeat.tokenizers.semantic import CODES, LEVELS, SemanticIds
from mmfeat.triton_contract import Caption, pack_embedding


def blobs(n: int = 600, dim: int = 8, centers: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mid = rng.normal(size=(centers, dim)) * 5
    return mid[rng.integers(centers, size=n)] + rng.normal(size=(n, dim)) * 0.3


def test_kmeans_finds_separated_clusters_and_leaves_no_code_empty() -> None:
    x = blobs()
    c = kmeans(x, 6, np.random.default_rng(0))
    assign = nearest(x, c)
    assert np.bincount(assign, minlength=6).min() > 0
    # every blob lands in one cluster: the within-cluster spread is the noise's, not the blobs'
    assert ((x - c[assign]) ** 2).sum(1).mean() < 8 * 0.3**2 * 2
    # more codes than blobs: still every code used (an empty one takes the worst-served point)
    assert np.bincount(nearest(x, kmeans(x, 20, np.random.default_rng(0))), minlength=20).min() > 0
    with pytest.raises(ValueError, match="cannot train"):
        kmeans(x[:5], 6, np.random.default_rng(0))


def test_training_is_reproducible_byte_for_byte_and_each_level_lowers_the_error() -> None:
    x = blobs(dim=12, centers=30)
    a = train_codebook(x, levels=3, codes=8, seed=1, captioner_version="cap@1", corpus={"what": "blobs"})
    b = train_codebook(x, levels=3, codes=8, seed=1, captioner_version="cap@1", corpus={"what": "blobs"})
    assert a.to_bytes() == b.to_bytes()
    assert train_codebook(x, levels=3, codes=8, seed=2, captioner_version="cap@1", corpus={}).to_bytes() != a.to_bytes()
    q = quality(a, x)
    errors = [level["relative_error"] for level in q["levels"]]
    assert errors[0] > errors[1] > errors[2] > 0
    assert q["relative_error"] == errors[-1] and all(level["codes_used"] == 1.0 for level in q["levels"])
    back = Codebook.from_bytes(a.to_bytes())
    assert np.array_equal(back.centroids, a.centroids) and back.captioner_version == "cap@1" and back.corpus["n"] == len(x)
    assert np.array_equal(back.encode(x), a.encode(x))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.data())
def test_code_and_prefix_ids_are_in_range_and_a_prefix_id_names_its_prefix(k: int, levels: int, data: st.DataObject) -> None:
    codes = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=levels, max_size=levels)))
    other = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=levels, max_size=levels)))
    ids, pids = code_ids(codes, k), prefix_ids(codes, k)
    assert all(level * k <= i < (level + 1) * k for level, i in enumerate(ids))
    assert all(0 <= p < prefix_vocab(levels, k) for p in pids)
    offsets = [sum(k ** (j + 1) for j in range(level)) for level in range(levels)]
    assert all(offsets[level] <= p < offsets[level] + k ** (level + 1) for level, p in enumerate(pids))
    for level in range(levels):  # two sequences share a prefix token exactly when they share that prefix
        same = list(codes[: level + 1]) == list(other[: level + 1])
        assert (pids[level] == prefix_ids(other, k)[level]) == same


def test_the_committed_codebook_tokenizes_the_captioners_embedding_and_refuses_anothers() -> None:
    toks = load_tokenizers(["sid", "sid_prefix"], ASSETS / "tokenizers", 1 << 20)
    sid, pre = toks["sid"], toks["sid_prefix"]
    assert isinstance(sid, SemanticIds) and isinstance(pre, SemanticIds)
    book = sid.book
    assert (book.levels, book.size) == (LEVELS, CODES) and sid.vocab_size == LEVELS * CODES
    vector = book.centroids[0, 5] + book.centroids[1, 7] + book.centroids[2, 1]
    cap = Caption("a dog", [1], pack_embedding(vector))
    ids, version = sid.tokenize("a dog", cap, book.captioner_version)
    assert ids == [5, CODES + 7, 2 * CODES + 1] and version == sid.version and version.startswith("sid-rq3x64@")
    pids, pversion = pre.tokenize("a dog", cap, book.captioner_version)
    assert pids == [5, CODES + 5 * CODES + 7, CODES + CODES**2 + (5 * CODES + 7) * CODES + 1] and pversion.startswith("sid-prefix-")
    assert sid.decode(ids) == ["L1:5", "L2:7", "L3:1"] and pre.decode(pids) == ["5", "5/7", "5/7/1"]
    with pytest.raises(RecordError, match="quantizes captioner") as e:
        sid.tokenize("a dog", cap, "other@1")
    assert e.value.reason == "codebook_mismatch"
    with pytest.raises(RecordError, match="0 values") as e:
        sid.tokenize("a dog", Caption("a dog", [1]), book.captioner_version)
    assert e.value.reason == "no_embedding"


def test_semantic_ids_are_opt_in_and_ranked() -> None:
    assert "sid" not in published_by_default() and "sid_prefix" not in published_by_default()
    assert TOKENIZERS["sid"].ranker and TOKENIZERS["sid_prefix"].ranker


def test_the_sweep_measures_every_shape_on_held_out_embeddings_against_a_random_codebook() -> None:
    from mmfeat.semantic_ids import sweep

    x = blobs(n=700, dim=10, centers=40, seed=3)
    points = sweep(x[:500], x[500:], "cap@1", shapes=((2, 8), (3, 8)))
    assert [p["shape"] for p in points] == ["rq2x8", "rq3x8"]
    for p in points:
        assert p["heldout"]["items"] == 200 and p["train"]["items"] == 500
        # k-means explains the held-out embeddings better than a codebook of random training rows
        assert p["heldout"]["relative_error"] < p["heldout_random_codebook"]["relative_error"]
    assert points[1]["heldout"]["relative_error"] < points[0]["heldout"]["relative_error"]  # a third level helps
