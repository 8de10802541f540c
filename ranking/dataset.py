"""Examples for the ranker from a World: IDs, dense and visual features, item token lists, and user
profiles built point-in-time with the shared update rule (mmfeat/profile.py), from engagements
strictly before each example."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mmfeat.engagements import Engagement
from mmfeat.profile import ProfileConfig, ProfileTimeline, features_at
from mmfeat.tokenizers import ranked
from ranking.model import IdList
from ranking.world import DAY, EVENT_OF_TASK, TASKS, World

PROFILE_EVENTS = ("like", "comment", "share", "time_spent", "view")


@dataclass
class Jagged:
    """Per-row id lists in CSR form (values, optional weights, row starts)."""

    values: np.ndarray
    starts: np.ndarray  # [rows + 1]
    weights: np.ndarray | None = None

    def gather(self, rows: np.ndarray) -> IdList:
        begin = self.starts[rows]
        lengths = self.starts[rows + 1] - begin
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # every value's position: its row's start in the source, plus its rank within the row
        idx = np.repeat(begin - offsets, lengths) + np.arange(int(lengths.sum()))
        w = torch.from_numpy(self.weights[idx].astype(np.float32)) if self.weights is not None else None
        return IdList(torch.from_numpy(self.values[idx].astype(np.int64)), torch.from_numpy(offsets.astype(np.int64)), w)


def jagged(rows: list[list[int]], weights: list[list[float]] | None = None) -> Jagged:
    starts = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = np.array([v for r in rows for v in r], dtype=np.int64)
    w = np.array([x for r in weights for x in r], dtype=np.float32) if weights is not None else None
    return Jagged(values, starts, w)


@dataclass
class Dataset:
    user: np.ndarray
    item: np.ndarray
    owner: np.ndarray
    ts: np.ndarray
    dense: np.ndarray  # [N, d]
    visual: np.ndarray  # [items, V], gathered by item
    content: np.ndarray  # [items, E] the captioner's content embedding (principal components), gathered by item
    item_lists: dict[str, Jagged]  # per item
    profile_lists: dict[str, Jagged]  # per example
    labels: np.ndarray  # [N, T]
    vocab: dict[str, int]  # list name -> vocabulary size
    table_of: dict[str, str]  # list name -> the tokenizer whose ids it holds (lists of one tokenizer share a table)

    def __len__(self) -> int:
        return len(self.user)


def engagements_of(world: World, k: int) -> list[Engagement]:
    """The engagements impression k produced: one per positive task, at the impression's time."""
    out = []
    for t, task in enumerate(TASKS):
        if world.labels[k, t] > 0:
            value = 30.0 if task == "time_spent" else 1.0
            item = world.items[int(world.imp_item[k])].item_id
            out.append(
                Engagement(f"imp-{k}-{task}", f"u{int(world.imp_user[k])}", item, EVENT_OF_TASK[task], value, float(world.imp_ts[k]))
            )
    return out


def point_in_time_profiles(world: World, cfg: ProfileConfig, tokenizer: str) -> tuple[dict[str, Jagged], list[float]]:
    """Per example and event type, the user's profile from engagements strictly before the example
    (mmfeat.profile.ProfileTimeline), weights as shares of the user's decayed total.

    Also returns, per example, the newest event time its profile contains (-inf when empty): the
    no-leakage test checks it is always before the example's own time.
    """
    log = [
        (e, world.items[int(world.imp_item[k])].feature.ids(tokenizer)) for k in range(len(world.imp_ts)) for e in engagements_of(world, k)
    ]
    timeline = ProfileTimeline(log, cfg)
    rows: dict[str, list[list[int]]] = {e: [] for e in PROFILE_EVENTS}
    wts: dict[str, list[list[float]]] = {e: [] for e in PROFILE_EVENTS}
    newest: list[float] = []
    for k in range(len(world.imp_ts)):
        t = float(world.imp_ts[k])
        state = timeline.before(f"u{int(world.imp_user[k])}", t)
        newest.append(state.ref_ts if state is not None else -math.inf)
        feats = features_at(state, cfg, t)
        for ev in PROFILE_EVENTS:
            ids, weights = feats.get(ev, ([], []))
            total = sum(weights)
            rows[ev].append(list(ids))
            # shares of the user's decayed total: a weighted mean, whose scale does not grow with activity
            wts[ev].append([w / total for w in weights] if total > 0 else [])
    return {f"profile_{ev}": jagged(rows[ev], wts[ev]) for ev in PROFILE_EVENTS}, newest


def token_idf(lists: list[list[int]], vocab: int) -> np.ndarray:
    """log(N / document frequency) per token over ``lists`` (0 for a token in every list, or in none)."""
    df = np.zeros(vocab)
    for ids in lists:
        df[list(set(ids))] += 1
    return np.where(df > 0, np.log(len(lists) / np.maximum(df, 1)), 0.0).astype(np.float32)


def reweighted(j: Jagged, scale: np.ndarray) -> Jagged:
    """Each id's weight times ``scale[id]``, renormalized to sum 1 per row (a row that sums to 0 gets 0s)."""
    assert j.weights is not None
    w = j.weights * scale[j.values]
    row = np.repeat(np.arange(len(j.starts) - 1), np.diff(j.starts))
    total = np.bincount(row, weights=w, minlength=len(j.starts) - 1)[row]
    return Jagged(j.values, j.starts, np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0).astype(np.float32))


CONTENT_DIMS = 32  # the content embedding's leading principal components the ranker reads


def principal_components(x: np.ndarray, k: int) -> np.ndarray:
    """[N, d] -> [N, min(k, d)]: the rows' coordinates on the k leading principal components, each scaled to unit
    variance. A fixed input transform of this ranker (as the profiles' IDF is): the dense arch's first layer then
    reads 32 numbers more, not 256, which is most of what the embedding costs a training step."""
    centered = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    coords = centered @ vt[: min(k, len(vt))].T
    return (coords / (coords.std(axis=0) + 1e-9)).astype(np.float32)


COMPACT_OVER = 8  # an item list whose id space is this many times the item count gets a table of the ids in use


# The other sources are read with the hashing trick: one id per word, for any word. Tokenizers A and B were
# trained on captions, so a word no caption has (a post's "#cooking", a banner's "TRAVEL") is, to B, the unknown id
# and, to A, a run of one-letter pieces that every other unseen word shares: pooled, the word is gone (docs/ranking.md).
SOURCE_TOKENIZER = "hash"
OTHER_SOURCES = {"post_text": "item_post_hash", "ocr": "item_ocr_hash", "asr": "item_asr_hash"}  # source -> list name


def compacted(j: Jagged) -> tuple[Jagged, int]:
    """The list with its ids renumbered densely (sorted order), and the table size that needs: a prefix-token space
    of K + K^2 + K^3 ids is far larger than the ids a world's items use, and Adam updates every row of a table."""
    (out,), size = compacted_together([j])
    return out, size


def compacted_together(lists: list[Jagged]) -> tuple[list[Jagged], int]:
    """Lists that share one table renumbered with one mapping, so an id means the same row in each."""
    used, dense_ids = np.unique(np.concatenate([j.values for j in lists]), return_inverse=True)
    cuts = np.cumsum([len(j.values) for j in lists])[:-1]
    parts = np.split(dense_ids.astype(np.int64), cuts)
    return [Jagged(v, j.starts, j.weights) for v, j in zip(parts, lists, strict=True)], max(1, len(used))


def build_dataset(
    world: World,
    profile_cfg: ProfileConfig,
    profile_tokenizer: str = "sp",
    vocab_sizes: dict[str, int] | None = None,
    profile_idf: bool = True,
) -> Dataset:
    """``profile_idf``: the ranker reads profile weights times each token's IDF over the item captions, so the
    words every caption shares ("a", "drawing") stop drowning the ones that tell users apart. The published
    profile stays a plain aggregate; this is an input transform of this ranker."""
    items = world.items
    sizes = vocab_sizes or {}

    def size_of(tok: str) -> int:
        most = (max(it.feature.ids(tok), default=0) for it in items)
        return sizes.get(tok) or 1 + max(most, default=0)

    item_lists = {f"item_{tok}": jagged([it.feature.ids(tok) for it in items]) for tok in ranked()}
    vocab = {f"item_{tok}": size_of(tok) for tok in ranked()}
    table_of = {f"item_{tok}": tok for tok in ranked()}
    # the post's text, the text on the picture and the speech: each its own list, one table of word ids for the three
    names = list(OTHER_SOURCES.values())
    words, n_words = compacted_together([jagged([it.feature.ids(SOURCE_TOKENIZER, src) for it in items]) for src in OTHER_SOURCES])
    for name, j in zip(names, words, strict=True):
        item_lists[name], vocab[name], table_of[name] = j, n_words, SOURCE_TOKENIZER
    for tok in ranked():
        name = f"item_{tok}"
        if tok != profile_tokenizer and vocab[name] > COMPACT_OVER * len(items):
            item_lists[name], vocab[name] = compacted(item_lists[name])
    profiles, _ = point_in_time_profiles(world, profile_cfg, profile_tokenizer)
    if profile_idf:
        idf = token_idf([it.feature.ids(profile_tokenizer) for it in items], size_of(profile_tokenizer))
        profiles = {name: reweighted(j, idf) for name, j in profiles.items()}
    vocab.update({name: size_of(profile_tokenizer) for name in profiles})
    uploaded = np.array([it.uploaded_at for it in items])
    age_days = (world.imp_ts - uploaded[world.imp_item]) / DAY
    hour = (world.imp_ts % DAY) / DAY * 2 * math.pi
    dense = np.stack([age_days / world.config.days, np.sin(hour), np.cos(hour)], axis=1).astype(np.float32)
    visual = np.stack([it.visual for it in items]).astype(np.float32)
    visual = (visual - visual.mean(axis=0)) / (visual.std(axis=0) + 1e-6)
    content = principal_components(np.stack([it.embedding for it in items]), CONTENT_DIMS)
    return Dataset(
        user=world.imp_user, item=world.imp_item, owner=np.array([it.owner for it in items])[world.imp_item], ts=world.imp_ts,
        dense=dense, visual=visual, content=content, item_lists=item_lists, profile_lists=profiles,
        labels=world.labels.astype(np.float32), vocab=vocab,
        table_of=table_of | {name: profile_tokenizer for name in profiles},
    )  # fmt: skip
