"""The profile stage of a user partition over plain dicts: the join, waiting for late features (release, cap, TTL
per partition), redelivery, coalesced publication, the state's binary encoding."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfeat.engagements import Engagement
from mmfeat.errors import StateError
from mmfeat.profile import ProfileConfig, ProfileState, apply_engagement
from streams.stage import ProfileStage, StageConfig, index_key
from streams.state import ItemTokens, UserRecord, Waiting, decode_item, decode_user, encode_item, encode_user

PCFG = ProfileConfig(event_weights={"like": 1.0, "share": 3.0}, half_life_s=100.0, top_k=10)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def eng(i: int, item: str = "it", user: str | None = None, event: str = "like") -> Engagement:
    return Engagement(id=f"engagements[0]@{i}", user_id=user or f"u{i % 3}", item_id=item, event=event, value=1.0, ts=float(i),
                      partition=0, offset=i)  # fmt: skip


def make(cap: int = 3, ttl: float = 10.0, emit: float = 0.0) -> tuple[ProfileStage, dict[bytes, bytes], Clock]:
    users: dict[bytes, bytes] = {}
    clock = Clock()
    cfg = StageConfig(PCFG, tokenizer="word", features_topic="f", pending_cap=cap, pending_ttl_s=ttl, emit_interval_s=emit)
    return ProfileStage(users, {}, {}, cfg, clock), users, clock


def applied(stage: ProfileStage, user: str) -> int:
    got = stage.user(user)
    return 0 if got is None else got.state.applied


def test_known_items_join_and_the_state_equals_the_offline_rule() -> None:
    stage, _, _ = make()
    stage.on_features(0, [("it", ItemTokens([5, 6], "captioner=c word=w"))])
    out = stage.on_engagements(0, [eng(1), eng(4), eng(2)])
    want = None
    for e in (eng(1), eng(4)):
        want, _ = apply_engagement(want, e, [5, 6], PCFG, "captioner=c word=w")
    got = stage.user("u1")
    assert got is not None and got.state == want and got.waiting == []
    assert [p.user_id for p in out.profiles] == ["u1", "u1", "u2"]  # emit interval 0: one record per engagement
    assert out.profiles[-1].events["like"].token_ids == [5, 6]


def test_engagements_wait_for_late_features_then_are_applied_once() -> None:
    stage, _, _ = make()
    assert stage.on_engagements(0, [eng(1), eng(4)]).profiles == []
    redelivered = stage.on_engagements(0, [eng(1)])
    assert redelivered.skipped == 1 and len(stage.user("u1").waiting) == 2  # type: ignore[union-attr]  # not queued twice
    out = stage.on_features(0, [("it", ItemTokens([9]))])
    assert applied(stage, "u1") == 2 and stage.user("u1").waiting == []  # type: ignore[union-attr]
    assert [p.engagements for p in out.profiles] == [1, 2]
    assert stage.on_features(0, [("it", ItemTokens([9]))]).profiles == []  # a redelivered feature record releases nothing
    assert stage.on_engagements(0, [eng(1), eng(4)]).skipped == 2 and applied(stage, "u1") == 2


def test_a_full_item_refuses_with_a_reason() -> None:
    stage, _, _ = make(cap=2)
    out = stage.on_engagements(0, [eng(1), eng(2), eng(3)])
    assert [(u.reason, u.engagement_id) for u in out.unmatched] == [("pending_full", "engagements[0]@3")]
    assert stage.on_engagements(0, [eng(3)]).unmatched == []  # given up once: a redelivery is not refused again


def test_tick_expires_only_what_waited_longer_than_the_ttl_in_its_partition() -> None:
    stage, _, clock = make(ttl=10.0)
    stage.on_engagements(0, [eng(1, "a")])
    stage.on_engagements(1, [eng(8, "b")])  # another user, in another partition
    clock.t += 8
    stage.on_engagements(0, [eng(4, "a")])
    clock.t += 1
    assert stage.on_tick(0).unmatched == []
    clock.t += 3
    out = stage.on_tick(0)
    assert [(u.reason, u.engagement_id) for u in out.unmatched] == [("pending_expired", "engagements[0]@1")]
    assert [w.engagement.offset for w in stage.user("u1").waiting] == [4]  # type: ignore[union-attr]
    assert b"__index__/1" in stage.index and stage.user("u1") is not None
    assert [u.engagement_id for u in stage.on_tick(1).unmatched] == ["engagements[0]@8"]  # partition 1's own tick


def test_a_deleted_item_makes_later_engagements_wait_again() -> None:
    stage, _, _ = make()
    stage.on_features(0, [("it", ItemTokens([1]))])
    stage.on_features(0, [("it", None)])
    assert stage.on_engagements(0, [eng(1)]).profiles == [] and len(stage.user("u1").waiting) == 1  # type: ignore[union-attr]


def test_a_lost_index_entry_is_written_again_from_the_record_on_redelivery() -> None:
    stage, _, _ = make()
    stage.on_engagements(0, [eng(1)])
    del stage.index[index_key(0)]  # as if its changelog record died with the process
    stage.on_engagements(0, [eng(1)])  # the redelivered batch
    assert stage.on_features(0, [("it", ItemTokens([3]))]).profiles != [] and applied(stage, "u1") == 1


def test_publication_is_coalesced_per_user_and_always_follows_the_last_change() -> None:
    stage, _, clock = make(emit=1.0)
    stage.on_features(0, [("it", ItemTokens([5]))])
    first = stage.on_engagements(0, [eng(1), eng(4)])
    assert [(p.user_id, p.engagements) for p in first.profiles] == [("u1", 2)]  # once per batch, at once: not published lately
    clock.t += 0.5
    assert stage.on_engagements(0, [eng(7)]).profiles == []  # within the interval: held back
    assert stage.on_tick(0).profiles == []
    clock.t += 0.6
    late = stage.on_tick(0)
    assert [(p.user_id, p.engagements) for p in late.profiles] == [("u1", 3)]  # the tick after the interval: the latest state
    clock.t += 5
    assert stage.on_tick(0).profiles == []  # nothing changed since


def test_unpublished_users_survive_a_restart() -> None:
    stage, users, clock = make(emit=1.0)
    stage.on_features(0, [("it", ItemTokens([5]))])
    stage.on_engagements(0, [eng(1)])
    stage.on_engagements(0, [eng(4)])  # held back
    restarted = ProfileStage(users, stage.items, stage.index, stage.cfg, clock)  # the same tables, a new process
    assert [(p.user_id, p.engagements) for p in restarted.on_tick(0).profiles] == [("u1", 2)]


def test_user_records_round_trip_through_their_binary_encoding() -> None:
    state = None
    for i, ev in enumerate(("like", "share", "like")):
        state, _ = apply_engagement(state, eng(i, event=ev, user="u"), [i, 7], PCFG, f"captioner=c{i} word=w")
    assert state is not None
    rec = UserRecord(state, [Waiting(eng(9, "late", user="u"), 1234.5)])
    assert decode_user(encode_user(rec)) == rec
    empty = UserRecord(ProfileState(user_id="x"))
    assert decode_user(encode_user(empty)).state.ref_ts == -math.inf
    assert decode_item(encode_item(ItemTokens([1, 2**31 - 1], None))) == ItemTokens([1, 2**31 - 1], None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_table_bytes_are_a_state_error_never_a_crash_or_a_hang(data: bytes) -> None:
    good = encode_user(UserRecord(apply_engagement(None, eng(1, user="u"), [1, 2], PCFG)[0]))
    for raw in (data, good[: len(data) % len(good)], good + data[:3]):
        for decode in (decode_user, decode_item):
            with contextlib.suppress(StateError):  # refused as a broken store is fine; anything else fails the test
                decode(raw)


def test_a_corrupt_state_record_names_the_store() -> None:
    with pytest.raises(StateError, match="does not parse"):
        decode_user(b"\x07garbage")


def test_a_user_of_another_partition_is_refused_as_misrouted_and_the_rest_applied() -> None:
    users: dict[bytes, bytes] = {}
    cfg = StageConfig(PCFG, tokenizer="word", features_topic="f", pending_cap=3, pending_ttl_s=10.0, emit_interval_s=0.0)
    stage = ProfileStage(users, {}, {}, cfg, Clock(), partition_of=lambda u: 1 if u == "u2" else 0)
    stage.on_features(0, [("it", ItemTokens([5]))])
    out = stage.on_engagements(0, [eng(1), eng(2), eng(4)])
    assert [(e.user_id, err.reason) for e, err in out.failed] == [("u2", "misrouted")]
    assert (applied(stage, "u1"), stage.user("u2")) == (2, None)  # nothing of u2 written into partition 0's state
