"""The simulated world and its point-in-time profiles: deterministic, and no label leakage."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from captioner.world.clipart import BlankDrawings, load_vocabulary, make_splits, scenes
from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS
from mmfeat.profile import ProfileConfig, build_profiles, profile_features
from mmfeat.schemas import EmbeddingV1, FeatureRecordV1
from mmfeat.semantic_ids import code_ids, prefix_ids
from mmfeat.triton_contract import pack_embedding
from ranking.dataset import PROFILE_EVENTS, Jagged, build_dataset, engagements_of, point_in_time_profiles, reweighted, token_idf
from ranking.world import DAY, TASK_BIAS, WorldConfig, build_world, relation_word

CFG = WorldConfig(seed=3, users=20, items=40, owners=5, impressions=1500)
PCFG = ProfileConfig(event_weights=DEFAULT_EVENT_WEIGHTS, half_life_s=7 * DAY, top_k=8)


def fake_captioned(cfg: WorldConfig) -> list[tuple]:
    """Scenes with their true first caption standing in for the captioner's, and random visual vectors."""
    rng = np.random.default_rng(0)
    out = []
    spec = make_splits(load_vocabulary()).train
    for i, (_, scene) in enumerate(scenes(spec, cfg.items, seed=cfg.seed, cache=BlankDrawings())):
        words = scene.captions[0].split()
        ids = {"sp": [zlib.crc32(w.encode()) % 100 for w in words], "word": [zlib.crc32(w.encode()) % 150 for w in words]}
        codes = rng.integers(0, 16, 3)
        ids |= {"sid": code_ids(codes, 16), "sid_prefix": prefix_ids(codes, 16)}
        embedding = EmbeddingV1.of(pack_embedding(rng.normal(size=8)))
        rec = FeatureRecordV1(item_id=f"w-{i}", owner_id="o", caption=scene.captions[0], caption_raw=scene.captions[0], token_ids=ids,
                              captioner_version="test", tokenizer_versions={}, content_sha256="x",
                              upload_created_at=datetime(2026, 1, 1, tzinfo=UTC), embedding=embedding)  # fmt: skip
        out.append((scene, rec, rng.normal(size=16), i % 12))
    return out


def test_the_world_is_deterministic_for_a_seed() -> None:
    a, b = build_world(CFG, fake_captioned(CFG)), build_world(CFG, fake_captioned(CFG))
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.imp_item, b.imp_item)
    assert np.all(np.diff(a.imp_ts) >= 0)
    uploaded = np.array([it.uploaded_at for it in a.items])
    assert np.all(uploaded[a.imp_item] <= a.imp_ts)  # nobody sees an item before it is uploaded


def test_profiles_use_only_engagements_strictly_before_each_example() -> None:
    world = build_world(CFG, fake_captioned(CFG))
    lists, newest = point_in_time_profiles(world, PCFG, "sp")
    assert all(nt < t for nt, t in zip(newest, world.imp_ts, strict=True))
    # recompute a few examples from scratch with the shared rule and compare the like list
    rng = np.random.default_rng(1)
    for k in rng.choice(len(world.imp_ts), 25, replace=False):
        before = [e for j in range(len(world.imp_ts)) if world.imp_ts[j] < world.imp_ts[k] for e in engagements_of(world, j)]
        tokens = {it.item_id: it.feature.token_ids["sp"] for it in world.items}
        user = f"u{int(world.imp_user[k])}"
        profiles = build_profiles([e for e in before if e.user_id == user], tokens, PCFG)
        got = lists["profile_like"].gather(np.array([k]))
        want = profile_features(profiles[user], PCFG).get("like", {"token_ids": []}) if user in profiles else {"token_ids": []}
        assert got.values.tolist() == want["token_ids"]
        if len(got.values):
            assert got.weights is not None and math.isclose(float(got.weights.sum()), 1.0, rel_tol=1e-5)


def test_dataset_shapes() -> None:
    world = build_world(CFG, fake_captioned(CFG))
    ds = build_dataset(world, PCFG)
    assert len(ds) == CFG.impressions and ds.labels.shape == (CFG.impressions, 5)
    assert set(ds.profile_lists) == {f"profile_{e}" for e in PROFILE_EVENTS}
    assert set(ds.item_lists) == {"item_sp", "item_word", "item_sid", "item_sid_prefix", "item_post_hash", "item_ocr_hash", "item_asr_hash"}
    assert ds.table_of["item_post_hash"] == ds.table_of["item_ocr_hash"] == "hash"  # the other sources share one table of words
    assert ds.table_of["profile_like"] == "sp" == ds.table_of["item_sp"]
    assert ds.content.shape == (CFG.items, 8) and np.allclose(ds.content.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(ds.content.std(axis=0), 1, atol=1e-4)


def test_a_sparse_id_space_is_compacted_to_the_ids_in_use() -> None:
    from ranking.dataset import compacted, jagged

    j = jagged([[5000, 7], [7, 900_000], []])
    dense, size = compacted(j)
    assert size == 3 and dense.values.tolist() == [1, 0, 0, 2] and dense.starts.tolist() == j.starts.tolist()
    # the prefix tokens' space (K + K^2 + K^3) is far above the items': its table holds the ids in use only
    ds = build_dataset(build_world(CFG, fake_captioned(CFG)), PCFG)
    used = {p for it in build_world(CFG, fake_captioned(CFG)).items for p in it.feature.token_ids["sid_prefix"]}
    assert ds.vocab["item_sid_prefix"] == len(used) and int(ds.item_lists["item_sid_prefix"].values.max()) == len(used) - 1


def test_the_other_sources_share_one_mapping_so_a_word_is_one_row_in_each() -> None:
    from ranking.dataset import compacted_together, jagged

    post, ocr = jagged([[900_001, 42], [42]]), jagged([[], [900_001, 77]])
    (p, o), size = compacted_together([post, ocr])
    assert size == 3 and p.values.tolist() == [2, 0, 0] and o.values.tolist() == [2, 1]
    assert p.starts.tolist() == post.starts.tolist() and o.starts.tolist() == ocr.starts.tolist()


def test_world_settings_are_checked_by_name_and_type() -> None:
    import pytest

    from mmfeat.errors import ConfigError
    from ranking.evaluate import world_config

    cfg = world_config(4, quick=False, overrides={"users": "50", "w_relation": "0.5"})
    assert (cfg.seed, cfg.users, cfg.w_relation, cfg.items) == (4, 50, 0.5, WorldConfig().items)
    with pytest.raises(ConfigError, match="unknown world setting 'user'"):
        world_config(0, quick=False, overrides={"user": "5"})
    with pytest.raises(ConfigError, match="not a int"):
        world_config(0, quick=False, overrides={"users": "many"})


def test_late_users_and_drift_shape_the_log_and_nothing_else() -> None:
    captioned = fake_captioned(CFG)
    plain = build_world(CFG, captioned)
    assert np.isinf(plain.switch_ts).all() and not plain.join_ts.any()
    # at 0 the settings leave the world exactly as it was
    same = build_world(replace(CFG, drift=0.0, late_users=0.0), captioned)
    assert np.array_equal(same.labels, plain.labels) and np.array_equal(same.imp_user, plain.imp_user)

    late = build_world(replace(CFG, late_users=0.5), captioned)
    joined = late.join_ts > 0
    assert 0 < joined.sum() < CFG.users
    assert np.all(late.imp_ts >= late.join_ts[late.imp_user])  # no impression before its user joined
    assert set(np.unique(late.imp_user[late.imp_ts < late.join_ts[joined].min()])) <= set(np.flatnonzero(~joined))

    drift = build_world(replace(CFG, drift=1.0, w_relation=0.0, w_id=0.0, w_pop=0.0, w_topic=0.0), captioned)
    assert np.isfinite(drift.switch_ts).all() and not np.array_equal(drift.later_likes, drift.likes)
    # the ground truth uses the interests in force at each impression's time
    names = {n: i for i, n in enumerate(drift.names)}
    for k in range(0, len(drift.imp_ts), 97):
        u, it = int(drift.imp_user[k]), drift.items[int(drift.imp_item[k])]
        likes = drift.later_likes[u] if drift.imp_ts[k] >= drift.switch_ts[u] else drift.likes[u]
        sem = sum(likes[names[n]] for n in set(it.scene.names))
        assert math.isclose(drift.truth_logit[k, 0], TASK_BIAS["like"] + drift.config.w_names * sem, abs_tol=1e-9)


def test_idf_reweighting_of_profiles() -> None:
    idf = token_idf([[1, 2, 2], [1, 3], [1]], vocab=5)
    assert idf[1] == 0.0 and idf[0] == 0.0 and idf[4] == 0.0  # in every list; in none
    assert math.isclose(float(idf[2]), math.log(3), rel_tol=1e-6) and math.isclose(float(idf[3]), math.log(3), rel_tol=1e-6)
    j = Jagged(np.array([1, 2, 3, 1, 1]), np.array([0, 3, 3, 5]), np.array([0.5, 0.3, 0.2, 0.6, 0.4], np.float32))
    r = reweighted(j, idf)  # row 0: only 2 and 3 keep weight; row 1 is empty; row 2 holds only the common token
    assert np.allclose(r.weights, [0.0, 0.6, 0.4, 0.0, 0.0]) and np.array_equal(r.values, j.values)


def test_a_relation_interest_is_named_for_its_axis() -> None:
    """ "a dog below a cat" and "a cat above a dog" are one picture, so a user's interest cannot tell them apart."""
    spec = make_splits(load_vocabulary()).train
    words = {relation_word(sc) for _, sc in scenes(spec, 200, seed=2, cache=BlankDrawings(), kinds=["relation", "action", "single"])}
    assert {"left", "above", None} <= words
    assert not {"right", "below"} & words
    assert {"walking", "riding", "playing"} & words


def test_model_config_overrides_size_the_ranker_for_the_throughput_bench() -> None:
    from ranking.evaluate import VARIANTS
    from ranking.model import DLRMRanker
    from ranking.train import model_config, step_throughput

    ds = build_dataset(build_world(CFG, fake_captioned(CFG)), PCFG)
    full = VARIANTS[-1]
    cfg = model_config(ds, full, {"over": (48, 24, 12)})
    assert cfg.over == (48, 24, 12) and set(cfg.lists) == set(full.lists)
    assert cfg.weighted == frozenset(n for n in full.lists if n.startswith("profile_"))
    model = DLRMRanker(cfg)
    assert [m.out_features for m in model.over if isinstance(m, torch.nn.Linear)] == [48, 24, 12]
    assert model.heads.heads.in_features == 12
    rates = step_throughput(ds, np.arange(1000), VARIANTS, seed=0, batch=64, steps=2, rounds=1, overrides={"over": (48, 24, 12)})
    assert set(rates) == {v.name for v in VARIANTS}
    assert all(r["step"] > 0 and r["prepare_and_step"] > 0 for r in rates.values())
    # ratios are against the first variant, round by round
    assert rates[VARIANTS[0].name]["step_ratio"] == rates[VARIANTS[0].name]["prepare_and_step_ratio"] == 1.0
    # one round: each ratio is that round's rate over the first variant's (no timing bound: the machine may be busy)
    first = rates[VARIANTS[0].name]
    assert all(r["step_ratio"] == pytest.approx(r["step"] / first["step"]) for r in rates.values())


def test_the_embedding_bench_times_methods_that_agree() -> None:
    from bench.ranker import HASHED_VOCAB, TORCHREC, embedding_costs, torchrec_versions

    ds = build_dataset(build_world(CFG, fake_captioned(CFG)), PCFG)
    costs = embedding_costs(ds, np.arange(1000), batches=2, rounds=1)  # raises if a method's output differs from the ranker's
    vocab = str(ds.vocab["item_sp"])
    assert set(costs) == {vocab, str(HASHED_VOCAB)}
    # four methods: TorchRec's EmbeddingBagCollection too (torchrec and fbgemm are in the lock, and load with this torch)
    assert torchrec_versions() is not None
    assert all(len(by_method) == 4 and TORCHREC in by_method for by_method in costs.values())
    assert all(ms > 0 for by_method in costs.values() for ms in by_method.values())


def test_principal_components_keep_the_directions_of_most_variance() -> None:
    from ranking.dataset import principal_components

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    x = (rng.normal(size=(500, 10)) * np.array([9.0, 5.0] + [0.1] * 8)) @ basis.T + 3.0
    pcs = principal_components(x, 2)
    assert pcs.shape == (500, 2) and np.allclose(pcs.std(axis=0), 1, atol=1e-4)
    # the two kept coordinates explain x up to the small directions: least squares residual is tiny
    fit = np.linalg.lstsq(np.c_[pcs, np.ones(500)], x, rcond=None)[0]
    assert ((np.c_[pcs, np.ones(500)] @ fit - x) ** 2).mean() < 0.02


def test_the_hidden_topic_drives_labels_and_leaks_into_the_post_text() -> None:
    import random

    from ranking.posts import TOPICS, post_text

    world = build_world(replace(CFG, w_id=0.0, w_pop=0.0, w_names=0.0, w_relation=0.0, w_topic=3.0), fake_captioned(CFG))
    liked = world.topic_likes[world.imp_user, np.array([world.items[i].topic for i in world.imp_item])] > 0
    assert liked.any() and (~liked).any()
    assert world.labels[liked, 0].mean() > world.labels[~liked, 0].mean() + 0.2  # only the topic moves the like rate
    without = build_world(replace(CFG, w_topic=0.0), fake_captioned(CFG))
    base = build_world(replace(CFG, w_topic=0.0), fake_captioned(CFG))
    assert np.array_equal(without.labels, base.labels)
    rng = random.Random(0)
    posts = [post_text(rng, "cooking", 0.7) for _ in range(400)]
    share = sum("cooking" in p for p in posts) / len(posts)
    assert 0.6 < share < 0.8 and any(t in p for p in posts for t in TOPICS if t != "cooking")  # noisy: some off-topic tags
