"""The item join over plain dicts: waiting, release on late features, the cap, the TTL, redelivery."""

from __future__ import annotations

from typing import Any

from mmfeat.engagements import Engagement
from streams.join import ItemJoin, LoadGate, index_key


def eng(i: int, item: str = "it") -> Engagement:
    return Engagement(id=f"e{i}", user_id=f"u{i % 3}", item_id=item, event="like", value=1.0, ts=float(i))


def make(cap: int = 3, ttl: float = 10.0) -> tuple[ItemJoin, dict[str, Any], dict[str, Any], dict[str, Any]]:
    items: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    index: dict[str, Any] = {}
    return ItemJoin(items, pending, index, cap=cap, ttl_s=ttl), items, pending, index


def test_known_item_passes_straight_through() -> None:
    j, *_ = make()
    j.on_features("it", [5, 6], partition=0, now=0.0)
    r = j.on_engagement(eng(1), partition=0, now=1.0)
    assert r.ready == [(eng(1), [5, 6])] and r.unmatched == []


def test_engagements_wait_for_late_features_then_are_released_once() -> None:
    j, _, pending, index = make()
    assert j.on_engagement(eng(1), 0, 1.0).ready == []
    assert j.on_engagement(eng(2), 0, 2.0).ready == []
    assert j.on_engagement(eng(1), 0, 3.0).ready == []  # a redelivery does not queue twice
    assert len(pending["it"]) == 2 and index[index_key(0)] == {"it": 1.0}
    r = j.on_features("it", [9], 0, 5.0)
    assert [e.id for e, _ in r.ready] == ["e1", "e2"] and all(t == [9] for _, t in r.ready)
    assert "it" not in pending and index[index_key(0)] == {}
    assert j.on_features("it", [9], 0, 6.0).ready == []  # a redelivered feature record releases nothing


def test_a_full_buffer_refuses_with_a_reason() -> None:
    j, _, pending, _ = make(cap=2)
    j.on_engagement(eng(1), 0, 0.0)
    j.on_engagement(eng(2), 0, 0.0)
    r = j.on_engagement(eng(3), 0, 0.0)
    assert [(reason, entry["e"]["id"]) for reason, entry in r.unmatched] == [("pending_full", "e3")]
    assert [x["e"]["id"] for x in pending["it"]] == ["e1", "e2"]


def test_tick_expires_only_what_waited_longer_than_the_ttl_in_its_partition() -> None:
    j, _, pending, index = make(ttl=10.0)
    j.on_engagement(eng(1, "a"), 0, 0.0)
    j.on_engagement(eng(2, "a"), 0, 8.0)
    j.on_engagement(eng(3, "b"), 1, 0.0)
    assert j.on_tick(0, 9.0).unmatched == []
    r = j.on_tick(0, 12.0)
    assert [(reason, e["e"]["id"]) for reason, e in r.unmatched] == [("pending_expired", "e1")]
    assert [x["e"]["id"] for x in pending["a"]] == ["e2"] and index[index_key(0)] == {"a": 8.0}
    assert "b" in pending  # partition 1's tick has not come
    assert [e["e"]["id"] for _, e in j.on_tick(1, 12.0).unmatched] == ["e3"]
    assert "b" not in pending


def test_deleted_item_makes_later_engagements_wait_again() -> None:
    j, items, _, _ = make()
    j.on_features("it", [1], 0, 0.0)
    j.on_item_deleted("it")
    assert "it" not in items
    assert j.on_engagement(eng(1), 0, 1.0).ready == []


def test_load_gate_opens_when_every_watched_partition_is_read_to_its_end() -> None:
    g = LoadGate()
    assert not g.is_open()  # nothing known yet: closed
    g.watch(0, end=3, position=0)
    g.watch(1, end=5, position=5)  # already read up to its end (committed offset)
    assert not g.is_open() and g.remaining() == 3
    g.processed(0, 0)
    g.processed(0, 2)
    assert g.is_open() and g.remaining() == 0
    empty = LoadGate()
    empty.watch(0, end=0, position=0)
    assert empty.is_open()
    none_held = LoadGate()  # a worker assigned no features partition
    none_held.start()
    assert none_held.is_open() and none_held.remaining() == 0
