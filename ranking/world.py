"""A simulated recommendation world whose ground truth is known.

Items are clip-art scenes from the captioner's generator (captioner/world/clipart.py), captioned by the trained
default captioner and turned into feature records by the worker's own functions (CaptionerRuntime,
FeatureBuilder). Users have latent interests in object names and in one relation or action word
("above", "walking", ...): the high-order semantics a caption carries and a pooled visual embedding
mostly does not. Impressions are sampled over time; each task's label is drawn from a ground-truth
logit that mixes ID effects, popularity and semantic match, with strengths set in ``WorldConfig``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import DrawingCache, Scene, load_vocabulary, make_splits, scenes
from mmfeat.features import FeatureBuilder
from mmfeat.schemas import FeatureRecordV1, UploadV1
from mmfeat.settings import DEFAULT_CAPTIONER, Settings
from mmfeat.tokenizers import ranked

TASKS = ("like", "comment", "share", "time_spent", "consumption")
EVENT_OF_TASK = {"like": "like", "comment": "comment", "share": "share", "time_spent": "time_spent", "consumption": "view"}
TASK_BIAS = {"like": -2.2, "comment": -3.4, "share": -3.8, "time_spent": -2.0, "consumption": -0.6}
DAY = 86400.0


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    users: int = 1000
    items: int = 600
    owners: int = 60
    impressions: int = 200_000
    days: float = 28.0
    interests_per_user: int = 3
    w_id: float = 0.5  # user, item and owner biases
    w_pop: float = 0.5  # item popularity
    w_names: float = 2.0  # liked object names in the scene
    w_relation: float = 2.0  # the user's liked relation or action word in the scene
    drift: float = 0.0  # share of users whose interests change to new ones at a random time in the period
    late_users: float = 0.0  # share of users who join late (in the last 40% of the period), so have little history
    upload_until: float = 1.0  # uploads arrive through this share of the period: new items keep arriving to the end
    fresh_boost: float = 2.0  # a new item's extra exposure (times its popularity weight), fading over fresh_days
    fresh_days: float = 2.0
    start_ts: float = 1_790_000_000.0


@dataclass
class Item:
    index: int
    item_id: str
    owner: int
    uploaded_at: float
    scene: Scene
    feature: FeatureRecordV1
    visual: np.ndarray  # pooled frozen encoder embedding [1280]

    @property
    def embedding(self) -> np.ndarray:
        """The captioner's content embedding, as published in the feature record (float16 values)."""
        assert self.feature.embedding is not None, f"{self.item_id}: the feature record has no content embedding"
        return self.feature.embedding.array()


@dataclass
class World:
    config: WorldConfig
    items: list[Item]
    likes: np.ndarray  # [users, names] interest weight of each user in each object name
    relation_of_user: list[str]
    names: list[str]
    user_bias: np.ndarray
    item_bias: np.ndarray
    owner_bias: np.ndarray
    popularity: np.ndarray
    # impressions, sorted by time
    imp_user: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    imp_item: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    imp_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, len(TASKS))))
    truth_logit: np.ndarray = field(default_factory=lambda: np.zeros((0, len(TASKS))))
    join_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per user: first possible impression (0: from the start)
    switch_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per user: when its interests changed (inf: never)
    later_likes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # per user: interests after the change


def relation_word(scene: Scene) -> str | None:
    """The relation or action a scene shows, as one word ("above", "left", "walking", ...). "b below a"
    is the same picture as "a above b", so a relation is named for its axis: left or above."""
    if scene.relation is None:
        return None
    rel = scene.relation[1]
    return {"right": "left", "below": "above"}.get(rel, rel)


def caption_items(
    cfg: WorldConfig, settings: Settings, progress: Callable[[int], None] | None = None, batch: int = 16
) -> list[tuple[Scene, FeatureRecordV1, np.ndarray]]:
    """Render ``cfg.items`` scenes and caption them with the worker's functions; also the frozen visual embedding."""
    import torch

    from captioner.modeling.encoder import load_pretrained
    from captioner.processing import to_tensor

    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    # the published lists, and every list the ranker reads (semantic IDs are opt-in on a live worker)
    names = [*settings.features.tokenizers, *(n for n in ranked() if n not in settings.features.tokenizers)]
    # version 1 records: the world's items are still images with their caption only
    builder = FeatureBuilder.of(settings.features.model_copy(update={"tokenizers": names, "feature_schema": 1}))
    encoder = load_pretrained()
    spec = make_splits(load_vocabulary()).train
    rendered = list(scenes(spec, cfg.items, seed=cfg.seed + 1000, cache=DrawingCache()))
    out: list[tuple[Scene, FeatureRecordV1, np.ndarray]] = []
    for start in range(0, len(rendered), batch):
        chunk = rendered[start : start + batch]
        images = [img for img, _ in chunk]
        captions = runtime.caption(images, [""] * len(images))
        with torch.inference_mode():
            visual = encoder.feature_map(to_tensor(images)).mean(dim=(2, 3)).numpy()
        for k, ((_, scene), cap) in enumerate(zip(chunk, captions, strict=True)):
            i = start + k
            upload = UploadV1(item_id=f"w{cfg.seed}-{i:05d}", owner_id=f"owner-{i % cfg.owners}", media_type="image",
                              media_uri=f"file:///world/{i}.png", created_at=datetime.fromtimestamp(cfg.start_ts, UTC))  # fmt: skip
            record = builder.build(upload, cap, runtime.version, f"scene-{i}")
            assert isinstance(record, FeatureRecordV1)
            out.append((scene, record, visual[k]))
        if progress:
            progress(len(out))
    return out


def build_world(cfg: WorldConfig, captioned: list[tuple[Scene, FeatureRecordV1, np.ndarray]]) -> World:
    """Users, biases and a timestamped impression log with labels from the ground-truth model."""
    rng = np.random.default_rng(cfg.seed)
    prng = random.Random(cfg.seed)
    names = sorted({n for scene, _, _ in captioned for n in scene.names})
    name_index = {n: i for i, n in enumerate(names)}
    relations = sorted({w for scene, _, _ in captioned if (w := relation_word(scene))})
    span = cfg.days * DAY
    items = []
    for i, (scene, feature, visual) in enumerate(captioned):
        at = cfg.start_ts + span * cfg.upload_until * (i / max(1, len(captioned)))
        items.append(Item(i, feature.item_id, i % cfg.owners, at, scene, feature, visual))
    likes = np.zeros((cfg.users, len(names)))
    for u in range(cfg.users):
        for name in prng.sample(names, min(cfg.interests_per_user, len(names))):
            likes[u, name_index[name]] = prng.uniform(0.5, 1.0)
    relation_of_user = [prng.choice(relations) for _ in range(cfg.users)]
    user_bias, item_bias = rng.normal(0, 1, cfg.users), rng.normal(0, 1, len(items))
    owner_bias, popularity = rng.normal(0, 1, cfg.owners), rng.normal(0, 1, len(items))

    # impressions: time uniform over the period, an item among those already uploaded (popular ones more often)
    ts = np.sort(rng.uniform(cfg.start_ts + span * 0.05, cfg.start_ts + span, cfg.impressions))
    uploaded = np.array([it.uploaded_at for it in items])
    # drift and late joiners draw from a generator of their own: with both at 0 the world is the same as without them
    extra = np.random.default_rng(cfg.seed + 7)
    joins = np.zeros(cfg.users)
    if cfg.late_users > 0:
        late = extra.uniform(size=cfg.users) < cfg.late_users
        joins = np.where(late, extra.uniform(cfg.start_ts + 0.6 * span, cfg.start_ts + 0.95 * span, cfg.users), 0.0)
        order = np.argsort(joins, kind="stable")
        joined = np.searchsorted(joins[order], ts, side="right")  # users joined by each impression's time
        users = order[(rng.uniform(size=cfg.impressions) * joined).astype(np.int64)]
    else:
        users = rng.integers(0, cfg.users, cfg.impressions)
    pop_w = np.exp(0.5 * popularity)
    item_idx = np.empty(cfg.impressions, dtype=np.int64)
    n_up = np.searchsorted(uploaded, ts, side="right")
    cum = np.cumsum(pop_w)
    # a fresh item's extra exposure (platforms explore new uploads): drawn with probability its share of the boost.
    # With fresh_boost=0 and upload_until=0.8 the world is the one before both settings, draw for draw
    fresh_span = cfg.fresh_days * DAY
    for k in range(cfg.impressions):
        avail = max(1, int(n_up[k]))
        if cfg.fresh_boost > 0:
            boost = cfg.fresh_boost * pop_w[:avail] * np.exp(-(ts[k] - uploaded[:avail]) / fresh_span)
            fresh, draw = float(boost.sum()), float(rng.uniform())
            if draw < fresh / (fresh + cum[avail - 1]):
                item_idx[k] = min(avail - 1, int(np.searchsorted(np.cumsum(boost), draw * (fresh + cum[avail - 1]), side="right")))
                continue
        item_idx[k] = int(np.searchsorted(cum[:avail], rng.uniform(0, cum[avail - 1]), side="right"))
    item_names = np.zeros((len(items), len(names)))
    for it in items:
        for name in it.scene.names:
            item_names[it.index, name_index[name]] = 1.0
    item_rel = [relation_word(it.scene) for it in items]
    switch = np.full(cfg.users, np.inf)
    later_likes, later_relation = likes.copy(), list(relation_of_user)
    if cfg.drift > 0:
        drifting = np.flatnonzero(extra.uniform(size=cfg.users) < cfg.drift)
        switch[drifting] = extra.uniform(cfg.start_ts + 0.2 * span, cfg.start_ts + span, len(drifting))
        for u in drifting:
            later_likes[u] = 0.0
            for j in extra.choice(len(names), min(cfg.interests_per_user, len(names)), replace=False):
                later_likes[u, j] = extra.uniform(0.5, 1.0)
            later_relation[u] = relations[int(extra.integers(len(relations)))]
    after = ts >= switch[users]  # impressions after the user's interests changed
    now_likes = np.where(after[:, None], later_likes[users], likes[users])
    sem = (now_likes * item_names[item_idx]).sum(axis=1)
    rel_of = [later_relation[u] if a else relation_of_user[u] for u, a in zip(users, after, strict=True)]
    rel = np.array([float(item_rel[i] is not None and item_rel[i] == r) for r, i in zip(rel_of, item_idx, strict=True)])
    base = (cfg.w_id * (user_bias[users] + item_bias[item_idx] + owner_bias[item_idx % cfg.owners]) / math.sqrt(3)
            + cfg.w_pop * popularity[item_idx] + cfg.w_names * sem + cfg.w_relation * rel)  # fmt: skip
    logits = np.stack([TASK_BIAS[t] + base for t in TASKS], axis=1)
    labels = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return World(cfg, items, likes, relation_of_user, names, user_bias, item_bias, owner_bias, popularity,
                 users.astype(np.int64), item_idx, ts, labels, logits, joins, switch, later_likes)  # fmt: skip
