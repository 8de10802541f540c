"""The profile update rule: decay on event time, out-of-order events, idempotence, weights, top-K and its memo."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS, Engagement
from mmfeat.profile import LINEAGE_KEEP, ProfileConfig, ProfileState, apply_engagement, build_profiles, profile_features, profile_record

HL = 100.0
CFG = ProfileConfig(event_weights={"like": 1.0, "share": 3.0, "time_spent": 0.5}, half_life_s=HL, top_k=3)


def eng(i: int, ts: float, event: str = "like", value: float = 1.0, item: str = "a", user: str = "u") -> Engagement:
    return Engagement(id=f"e{i}", user_id=user, item_id=item, event=event, value=value, ts=ts)


def fold(events: list[tuple[Engagement, list[int]]], cfg: ProfileConfig = CFG) -> ProfileState:
    state = None
    for e, toks in events:
        state, _ = apply_engagement(state, e, toks, cfg)
    assert state is not None
    return state


def test_decay_halves_weight_per_half_life_of_event_time() -> None:
    s = fold([(eng(1, 1000.0), [7]), (eng(2, 1000.0 + HL), [8])])
    assert s.ref_ts == 1000.0 + HL
    assert s.weights["like"][7] == pytest.approx(0.5)
    assert s.weights["like"][8] == pytest.approx(1.0)
    s = fold([(eng(1, 0.0), [7]), (eng(2, 3 * HL), [7])])
    assert s.weights["like"][7] == pytest.approx(1.0 + 0.125)


def test_out_of_order_events_give_the_same_profile_in_any_order() -> None:
    rng = random.Random(3)
    kinds = ["like", "share", "time_spent"]
    events = [(eng(i, rng.uniform(0, 500), rng.choice(kinds), rng.uniform(0, 5)), rng.sample(range(20), 4)) for i in range(12)]
    ref = fold(events)
    for perm in itertools.islice(itertools.permutations(events), 0, 2000, 97):
        got = fold(list(perm))
        assert got.ref_ts == ref.ref_ts and got.counts == ref.counts
        for ev, ws in ref.weights.items():
            assert got.weights[ev] == pytest.approx(ws, rel=1e-12)
    # the late event is decayed to the newest time, not applied at full weight
    late = fold([(eng(1, 200.0), [1]), (eng(2, 100.0), [2])])
    assert late.weights["like"][2] == pytest.approx(0.5) and late.weights["like"][1] == pytest.approx(1.0)


def test_an_engagement_applied_twice_counts_once() -> None:
    e = eng(1, 10.0)
    once, changed1 = apply_engagement(None, e, [1, 2], CFG)
    twice, changed2 = apply_engagement(once, e, [1, 2], CFG)
    assert changed1 and not changed2
    assert twice.counts == {"like": 1} and twice.weights == once.weights


def test_the_input_state_is_not_modified() -> None:
    s1, _ = apply_engagement(None, eng(1, 10.0), [1], CFG)
    before = s1.to_dict()
    apply_engagement(s1, eng(2, 500.0), [1, 2], CFG)
    assert s1.to_dict() == before


def test_event_weights_and_values_scale_the_contribution_and_tokens_count_once_per_item() -> None:
    s = fold([(eng(1, 0.0, "share"), [4, 4, 4]), (eng(2, 0.0, "time_spent", value=30.0), [4])])
    assert s.weights["share"][4] == pytest.approx(3.0)  # repeated ids in one caption count once
    assert s.weights["time_spent"][4] == pytest.approx(15.0)
    assert s.counts == {"share": 1, "time_spent": 1}


def test_top_k_cuts_the_features_heaviest_first_ties_by_id() -> None:
    s = fold([(eng(1, 0.0), [9, 5, 1, 3]), (eng(2, 0.0), [5, 3])])
    feats = profile_features(s, CFG)
    assert feats["like"]["token_ids"] == [3, 5, 1]
    assert feats["like"]["weights"] == pytest.approx([2.0, 2.0, 1.0])
    assert len(s.weights["like"]) == 4  # the state keeps every token; only the published feature is cut


def test_redeliveries_are_known_by_source_offset_whatever_the_history() -> None:
    # 10,000 engagements without producer ids: the state remembers one offset per source partition, not 10,000 ids
    events = [(Engagement(id=f"engagements[{i % 2}]@{i}", user_id="u", item_id="a", event="like", value=1.0, ts=float(i),
                          partition=i % 2, offset=i), [1]) for i in range(10_000)]  # fmt: skip
    s = fold(events)
    assert s.offsets == {0: 9999, 1: 10_000} and s.recent == () and s.applied == 10_000
    for e, toks in (events[0], events[5000], events[9999]):  # redelivered: anything below its partition's next offset
        again, changed = apply_engagement(s, e, toks, CFG)
        assert not changed and again.applied == 10_000


def test_producer_event_ids_are_remembered_in_a_bounded_window() -> None:
    cfg = ProfileConfig(event_weights={"like": 1.0}, half_life_s=HL, recent_ids=3)
    s = fold([(eng(i, float(i)), [1]) for i in range(5)], cfg)
    assert s.recent == ("e2", "e3", "e4")
    assert not apply_engagement(s, eng(4, 4.0), [1], cfg)[1]  # a duplicate inside the window is caught
    assert apply_engagement(s, eng(0, 0.0), [1], cfg)[1]  # one further back is not: the documented limit


def test_the_stored_scale_moves_without_changing_the_weights() -> None:
    # 100 half-lives apart: the stored weights are rescaled once instead of growing past float range
    s = fold([(eng(1, 0.0), [1]), (eng(2, 100 * HL), [2]), (eng(3, 100 * HL), [1])])
    assert s.base_ts == 100 * HL
    assert s.weights["like"] == pytest.approx({1: 1.0 + 2.0**-100, 2: 1.0}, rel=1e-12)


def test_max_tokens_bounds_the_state() -> None:
    cfg = ProfileConfig(event_weights={"like": 1.0}, half_life_s=HL, max_tokens=2)
    s = fold([(eng(1, 0.0), [1, 2]), (eng(2, 0.0), [2, 3]), (eng(3, 0.0), [3, 4])], cfg)
    # after e2: {1: 1, 2: 2, 3: 1} -> keep 2 and 1 (ties by id); e3's new tokens 3 and 4 then lose the tie
    assert s.weights["like"] == {2: 2.0, 1: 1.0}


def test_state_round_trips_through_json_and_an_empty_state_has_no_time() -> None:
    s = fold([(eng(1, 5.0), [1, 2]), (eng(2, 7.0, "share"), [2])])
    assert ProfileState.from_dict(s.to_dict()) == s
    empty = ProfileState(user_id="x")
    assert ProfileState.from_dict(empty.to_dict()).ref_ts == -math.inf


def test_build_profiles_skips_items_without_tokens_and_record_is_published_shape() -> None:
    cfg = ProfileConfig(event_weights=DEFAULT_EVENT_WEIGHTS, half_life_s=HL)
    profiles = build_profiles([eng(1, 0.0, item="a"), eng(2, 0.0, item="nope"), eng(3, 0.0, item="a", user="v")], {"a": [1]}, cfg)
    assert set(profiles) == {"u", "v"} and profiles["u"].applied == 1
    rec = profile_record(profiles["u"], cfg, tokenizer="word", features_topic="f")
    assert rec.events["like"].token_ids == [1] and rec.engagements == 1 and rec.as_of is not None


def test_lineage_counts_each_applied_engagement_once_and_stays_bounded() -> None:
    v1, v2 = "captioner=a@1 word=w@1", "captioner=b@2 word=w@1"
    state, _ = apply_engagement(None, eng(1, 0.0), [1], CFG, v1)
    state, _ = apply_engagement(state, eng(2, 1.0), [1], CFG, v2)
    state, _ = apply_engagement(state, eng(3, 2.0), [1], CFG, v2)
    again, changed = apply_engagement(state, eng(3, 2.0), [1], CFG, v2)  # redelivered: not counted twice
    assert not changed and again.lineage == state.lineage == {v1: 1, v2: 2}
    assert ProfileState.from_dict(state.to_dict()).lineage == state.lineage
    assert profile_record(state, CFG, tokenizer="word", features_topic="f.v2").feature_lineage == {v1: 1, v2: 2}
    for i in range(LINEAGE_KEEP + 3):  # many versions: the most used are kept
        state, _ = apply_engagement(state, eng(10 + i, 3.0 + i), [1], CFG, f"captioner=c{i} word=w@1")
    assert len(state.lineage) == LINEAGE_KEEP and state.lineage[v2] == 2 and state.lineage[v1] == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["like", "share", "time_spent"]),
            st.lists(st.integers(0, 12), min_size=1, max_size=4),
            st.sampled_from([0.0, 1.0, 2.0, 7.5]),
            st.sampled_from([0.0, 1.0, 50.0, -30.0, 7000.0]),
            st.booleans(),
        ),
        max_size=60,
    ),
    st.sampled_from([2, 4, 4096]),
)
def test_the_memo_ranks_few_tokens_with_the_result_of_ranking_them_all(
    steps: list[tuple[str, list[int], float, float, bool]], max_tokens: int
) -> None:
    """Ties (tokens of one item share a weight), out-of-order events, rescales (a jump of 70 half-lives) and a cap
    below top-K: whatever happened since the last published top-K, the memo's answer is the full ranking's."""
    cfg = ProfileConfig(event_weights={"like": 1.0, "share": 3.0, "time_spent": 0.5}, half_life_s=HL, top_k=3, max_tokens=max_tokens)
    state, ts = ProfileState(user_id="u"), 0.0
    for i, (event, tokens, value, dt, publish) in enumerate(steps):
        ts += dt
        state, _ = apply_engagement(state, eng(i, ts, event, value), tokens, cfg)
        if publish:
            want = profile_features(replace(state, memo=None), cfg)
            assert profile_features(state, cfg) == want
            assert state.memo is not None
    wider = replace(cfg, top_k=6)  # a memo of a top-3 cannot answer a top-6
    assert profile_features(state, wider) == profile_features(replace(state, memo=None), wider)
