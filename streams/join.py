"""The engagement x item-features join, over three tables keyed by item (no Faust in here).

Faust has no stream-stream join, so the join is a table of item tokens (fed by the features
stream) that engagements look up after both were repartitioned by item_id. An engagement whose
item has no features yet waits in ``pending`` (bounded: per-item cap and a time-to-live) and is
released when the features arrive. ``index`` keeps, per partition, the items that have something
waiting and since when, so an expiry tick scans only those.

The tables are plain MutableMappings here: Faust tables in the app, dicts in the unit tests. Every
write happens while handling an event of the partition the key belongs to, which is what Faust's
changelogs need.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmfeat.engagements import Engagement
from streams.pending import Entry, enqueue, expire, oldest


@dataclass
class JoinResult:
    """What one event released: engagements ready for the profile stage, and entries given up on."""

    ready: list[tuple[Engagement, list[int]]] = field(default_factory=list)
    unmatched: list[tuple[str, Entry]] = field(default_factory=list)  # (reason, entry)


def index_key(partition: int) -> str:
    return f"__pending_index__/{partition}"


class ItemJoin:
    def __init__(
        self,
        items: MutableMapping[str, Any],
        pending: MutableMapping[str, Any],
        index: MutableMapping[str, Any],
        *,
        cap: int,
        ttl_s: float,
    ) -> None:
        self.items = items
        self.pending = pending
        self.index = index
        self.cap = cap
        self.ttl_s = ttl_s

    def _set_waiting(self, partition: int, item_id: str, entries: Sequence[Entry]) -> None:
        """Write an item's pending entries and keep the partition's index in step (only when it changes)."""
        idx: dict[str, float] = dict(self.index.get(index_key(partition)) or {})
        if entries:
            self.pending[item_id] = list(entries)
            since = oldest(entries)
            assert since is not None
            if idx.get(item_id) != since:
                idx[item_id] = since
                self.index[index_key(partition)] = idx
        else:
            if self.pending.get(item_id) is not None:
                del self.pending[item_id]
            if item_id in idx:
                del idx[item_id]
                self.index[index_key(partition)] = idx

    def on_engagement(self, e: Engagement, partition: int, now: float) -> JoinResult:
        got = self.items.get(e.item_id)
        if got is not None:
            return JoinResult(ready=[(e, list(got["tokens"]))])
        waiting = self.pending.get(e.item_id) or []
        entries, refused = enqueue(waiting, e, now, self.cap)
        if len(entries) != len(waiting):
            self._set_waiting(partition, e.item_id, entries)
        return JoinResult(unmatched=[("pending_full", refused)] if refused else [])

    def on_features(self, item_id: str, tokens: list[int], partition: int, now: float, lineage: str | None = None) -> JoinResult:
        self.items[item_id] = {"tokens": tokens, "lineage": lineage}
        waiting = self.pending.get(item_id) or []
        if not waiting:
            return JoinResult()
        self._set_waiting(partition, item_id, [])
        return JoinResult(ready=[(Engagement.from_dict(entry["e"]), tokens) for entry in waiting])

    def lineage(self, item_id: str) -> str | None:
        """The feature version of an item's tokens (for the profile's lineage)."""
        got = self.items.get(item_id)
        return got.get("lineage") if got is not None else None

    def on_item_deleted(self, item_id: str) -> None:
        """A tombstone on the features topic: later engagements of the item wait (and expire) again."""
        if self.items.get(item_id) is not None:
            del self.items[item_id]

    def on_tick(self, partition: int, now: float) -> JoinResult:
        """Expire entries that waited longer than the TTL, in this partition only."""
        result = JoinResult()
        idx: dict[str, float] = dict(self.index.get(index_key(partition)) or {})
        for item_id, since in sorted(idx.items()):
            if now - since <= self.ttl_s:
                continue
            kept, gone = expire(self.pending.get(item_id) or [], now, self.ttl_s)
            result.unmatched.extend(("pending_expired", entry) for entry in gone)
            self._set_waiting(partition, item_id, kept)
        return result


class LoadGate:
    """Engagements start once the features topic has been read up to where it ended when this worker was
    assigned its partitions, so a replay (or a restart with a backlog) joins against loaded features rather
    than filling the pending buffer. Pure bookkeeping; streams/app.py feeds it and waits on it."""

    def __init__(self) -> None:
        self.targets: dict[int, int] | None = None
        self.done: dict[int, int] = {}

    def start(self) -> None:
        """This worker's partitions are known; the ones to wait for follow by ``watch`` (none: open at once)."""
        self.targets = {}

    def watch(self, partition: int, end: int, position: int) -> None:
        """Wait for ``partition`` up to offset ``end`` (exclusive); ``position`` is where its reading starts."""
        self.targets = (self.targets or {}) | {partition: end}
        self.done[partition] = max(self.done.get(partition, 0), position)

    def processed(self, partition: int, offset: int) -> None:
        self.done[partition] = max(self.done.get(partition, 0), offset + 1)

    def is_open(self) -> bool:
        return self.targets is not None and all(self.done.get(p, 0) >= end for p, end in self.targets.items())

    def remaining(self) -> int:
        return sum(max(0, end - self.done.get(p, 0)) for p, end in (self.targets or {}).items())
