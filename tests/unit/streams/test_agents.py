"""How the profiles agent groups a take of by-user messages into stage calls: per partition, consecutive messages of
one kind merged, offset order kept, a tick folded into the run it falls in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streams.agents import runs
from streams.records import ByUserMsg, EngagementsMsg, FeaturesMsg, TickMsg


@dataclass
class Message:
    partition: int
    offset: int


@dataclass
class Event:
    message: Message


def test_consecutive_messages_of_one_kind_merge_per_partition_in_order() -> None:
    made: dict[str, Callable[[], ByUserMsg]] = {"E": lambda: EngagementsMsg(entries=[]), "F": lambda: FeaturesMsg(items=[]), "T": TickMsg}
    taken = [(Event(Message(q, i)), made[k]()) for i, (q, k) in enumerate(zip([0, 1, 0, 0, 1, 0], "EEFETT", strict=True))]
    got = [(r.partition, r.kind.__name__, [m.offset for m in r.messages], r.tick) for r in runs(taken)]
    assert got == [
        (0, "EngagementsMsg", [0], False), (0, "FeaturesMsg", [2], False), (0, "EngagementsMsg", [3, 5], True),
        (1, "EngagementsMsg", [1, 4], True),
    ]  # fmt: skip
    merged = runs([(Event(Message(2, i)), EngagementsMsg(entries=[])) for i in range(4)])
    assert [(len(r.messages), len(r.parsed), len(r.events)) for r in merged] == [(4, 4, 4)]


def test_a_tick_does_not_split_a_run_and_ticks_alone_make_a_tick_run() -> None:
    seq = [EngagementsMsg(entries=[]), TickMsg(), EngagementsMsg(entries=[]), TickMsg(), FeaturesMsg(items=[])]
    got = runs([(Event(Message(0, i)), m) for i, m in enumerate(seq)])
    assert [(r.kind.__name__, [m.offset for m in r.messages], len(r.parsed), r.tick) for r in got] == [
        ("EngagementsMsg", [0, 1, 2, 3], 2, True), ("FeaturesMsg", [4], 1, False),
    ]  # fmt: skip
    alone = runs([(Event(Message(1, i)), TickMsg()) for i in range(3)])
    assert [(r.kind.__name__, len(r.messages), r.tick) for r in alone] == [("TickMsg", 3, True)]
