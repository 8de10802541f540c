"""How the profiles agent groups a take of by-user messages into stage calls: per partition, consecutive messages of
one kind merged, offset order kept."""

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
    got = [(r.partition, r.kind.__name__, [m.offset for m in r.messages]) for r in runs(taken)]
    assert got == [
        (0, "EngagementsMsg", [0]), (0, "FeaturesMsg", [2]), (0, "EngagementsMsg", [3]), (0, "TickMsg", [5]),
        (1, "EngagementsMsg", [1]), (1, "TickMsg", [4]),
    ]  # fmt: skip
    merged = runs([(Event(Message(2, i)), EngagementsMsg(entries=[])) for i in range(4)])
    assert [(len(r.messages), len(r.parsed), len(r.events)) for r in merged] == [(4, 4, 4)]
