"""A simulated recommendation world whose ground truth is known.

Items are clip-art scenes from the captioner's generator (captioner/world/clipart.py), captioned by the trained
default captioner and turned into feature records by the worker's own functions (CaptionerRuntime,
FeatureBuilder). Users have latent interests in object names and in one relation or action word
("above", "walking", ...): the high-order semantics a caption carries and a pooled visual embedding
mostly does not. Impressions are sampled over time; each task's label is drawn from a ground-truth
logit that mixes ID effects, popularity and semantic match, with strengths set in ``WorldConfig``.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image

from captioner.runtime import CaptionerRuntime
from captioner.world.clipart import DrawingCache, Scene, load_vocabulary, make_splits, scenes
from mmfeat.features import FeatureBuilder
from mmfeat.schemas import FeatureRecord, UploadV2
from mmfeat.settings import DEFAULT_CAPTIONER, Settings
from mmfeat.tokenizers import ranked
from ranking.posts import TOPICS, post_text, spoken_sentence, with_banner

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
    w_topic: float = 1.5  # the user's liked topic is the item's hidden topic (ranking/posts.py)
    post_signal: float = 0.7  # share of posts whose text names their topic
    sign_share: float = 0.3  # share of items with a banner naming their topic on the picture (read by OCR)
    speech_share: float = 0.2  # share of items with speech about their topic (transcribed by ASR)
    start_ts: float = 1_790_000_000.0


@dataclass
class Item:
    index: int
    item_id: str
    owner: int
    uploaded_at: float
    scene: Scene
    feature: FeatureRecord
    visual: np.ndarray  # pooled frozen encoder embedding [1280]
    topic: int = 0  # index into ranking.posts.TOPICS: what the post, its banner and its speech are about

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
    topic_likes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [users, topics]


def relation_word(scene: Scene) -> str | None:
    """The relation or action a scene shows, as one word ("above", "left", "walking", ...). "b below a"
    is the same picture as "a above b", so a relation is named for its axis: left or above."""
    if scene.relation is None:
        return None
    rel = scene.relation[1]
    return {"right": "left", "below": "above"}.get(rel, rel)


Captioned = tuple[Scene, FeatureRecord, np.ndarray, int]  # the scene, its record, its visual embedding, its topic


def caption_items(cfg: WorldConfig, settings: Settings, progress: Callable[[int], None] | None = None, batch: int = 16) -> list[Captioned]:
    """Render ``cfg.items`` scenes, give each a topic, a post, and for some a banner or speech about it (ranking/posts.py),
    and make their feature records with the worker's functions: the captioner, OCR on the bannered pictures and ASR
    on the spoken sentences, the same runtimes Triton serves; also the frozen visual embedding."""
    import torch

    from captioner.modeling.encoder import load_pretrained
    from captioner.processing import to_tensor

    runtime = CaptionerRuntime(DEFAULT_CAPTIONER)
    # the published lists, and every list the ranker reads (semantic IDs are opt-in on a live worker)
    names = [*settings.features.tokenizers, *(n for n in ranked() if n not in settings.features.tokenizers)]
    builder = FeatureBuilder.of(settings.features.model_copy(update={"tokenizers": names, "feature_schema": 2}))
    encoder = load_pretrained()
    spec = make_splits(load_vocabulary()).train
    rendered = list(scenes(spec, cfg.items, seed=cfg.seed + 1000, cache=DrawingCache()))
    words = _WorldWords(cfg)  # its own generator: the scenes and the impressions draw as before
    out: list[Captioned] = []
    for start in range(0, len(rendered), batch):
        chunk = [(words.picture(start + k, img), scene) for k, (img, scene) in enumerate(rendered[start : start + batch])]
        images = [img for img, _ in chunk]
        captions = runtime.caption(images, [""] * len(images))
        with torch.inference_mode():
            visual = encoder.feature_map(to_tensor(images)).mean(dim=(2, 3)).numpy()
        for k, ((img, scene), cap) in enumerate(zip(chunk, captions, strict=True)):
            i = start + k
            upload = UploadV2(schema_version=2, item_id=f"w{cfg.seed}-{i:05d}", owner_id=f"owner-{i % cfg.owners}", media_type="image",
                              media_uri=f"file:///world/{i}.png", text=words.post(i),
                              created_at=datetime.fromtimestamp(cfg.start_ts, UTC))  # fmt: skip
            ocr, ocr_version = words.read(i, img)
            asr, asr_version = words.hear(i)
            record = builder.build(
                upload, cap, runtime.version, f"scene-{i}", ocr=ocr, ocr_version=ocr_version, asr=asr, asr_version=asr_version
            )
            out.append((scene, record, visual[k], words.topic[i]))
        if progress:
            progress(len(out))
    return out


class _WorldWords:
    """Each item's topic and the words about it; OCR and ASR run only where there is a banner or speech."""

    def __init__(self, cfg: WorldConfig) -> None:
        rng = random.Random(cfg.seed + 31)
        self.cfg = cfg
        self.topic = [rng.randrange(len(TOPICS)) for _ in range(cfg.items)]
        self.posts = [post_text(rng, TOPICS[t], cfg.post_signal) for t in self.topic]
        self.banner = [rng.random() < cfg.sign_share for _ in range(cfg.items)]
        self.speech = [spoken_sentence(rng, TOPICS[t]) if rng.random() < cfg.speech_share else None for t in self.topic]
        self._ocr: Any = None
        self._asr: Any = None

    def picture(self, i: int, img: Image.Image) -> Image.Image:
        return with_banner(img, TOPICS[self.topic[i]]) if self.banner[i] else img

    def post(self, i: int) -> str:
        return self.posts[i]

    def read(self, i: int, img: Image.Image) -> tuple[list[tuple[float | None, str]] | None, str | None]:
        if not self.banner[i]:
            return None, None  # not read: an item without a banner needs no OCR request here
        from readers.ocr import OcrRuntime

        self._ocr = self._ocr or OcrRuntime()
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return [(None, self._ocr.read(buf.getvalue()))], self._ocr.version

    def hear(self, i: int) -> tuple[str | None, str | None]:
        said = self.speech[i]
        if said is None:
            return None, None
        from captioner.world.speech import speak
        from mmfeat.media.audio import AudioLimits, decode_sound, encode_test_audio
        from readers.asr import PocketSphinx

        self._asr = self._asr or PocketSphinx()
        u = speak(said)
        pcm = decode_sound(encode_test_audio(u.pcm, u.rate), AudioLimits())  # the served path's resampling
        return self._asr.transcribe(np.frombuffer(pcm, "<i2")), self._asr.version


def _topic_likes(cfg: WorldConfig) -> np.ndarray:
    """Each user likes one topic, [users, topics] (a generator of its own: with w_topic 0 the labels are those
    of the world without topics)."""
    rng = np.random.default_rng(cfg.seed + 53)
    likes = np.zeros((cfg.users, len(TOPICS)))
    likes[np.arange(cfg.users), rng.integers(0, len(TOPICS), cfg.users)] = rng.uniform(0.5, 1.0, cfg.users)
    return likes


def build_world(cfg: WorldConfig, captioned: list[Captioned]) -> World:
    """Users, biases and a timestamped impression log with labels from the ground-truth model."""
    rng = np.random.default_rng(cfg.seed)
    prng = random.Random(cfg.seed)
    names = sorted({n for scene, *_ in captioned for n in scene.names})
    name_index = {n: i for i, n in enumerate(names)}
    relations = sorted({w for scene, *_ in captioned if (w := relation_word(scene))})
    span = cfg.days * DAY
    items = []
    for i, (scene, feature, visual, topic) in enumerate(captioned):
        at = cfg.start_ts + span * cfg.upload_until * (i / max(1, len(captioned)))
        items.append(Item(i, feature.item_id, i % cfg.owners, at, scene, feature, visual, topic))
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
    topic_likes = _topic_likes(cfg)
    item_topic = np.array([it.topic for it in items])
    base = (cfg.w_id * (user_bias[users] + item_bias[item_idx] + owner_bias[item_idx % cfg.owners]) / math.sqrt(3)
            + cfg.w_pop * popularity[item_idx] + cfg.w_names * sem + cfg.w_relation * rel
            + cfg.w_topic * topic_likes[users, item_topic[item_idx]])  # fmt: skip
    logits = np.stack([TASK_BIAS[t] + base for t in TASKS], axis=1)
    labels = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return World(cfg, items, likes, relation_of_user, names, user_bias, item_bias, owner_bias, popularity,
                 users.astype(np.int64), item_idx, ts, labels, logits, joins, switch, later_likes, topic_likes)  # fmt: skip
