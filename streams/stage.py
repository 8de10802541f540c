"""The profile stage of one user partition, over plain mappings (Faust tables in the app, dicts in unit tests).

Everything a partition of ``<app>-by-user`` receives comes through here: batches of engagements, the item
features broadcast to every partition, and ticks. Per batch, each touched user's record is read once and
written once, whatever the number of its engagements in the batch.

- **Join.** Item tokens are in the partition's own ``items`` table (every partition receives every item), so
  an engagement meets its item's tokens where its user's state is.
- **Waiting.** An engagement whose item has no features yet is admitted (the dedupe decision is made now) and
  waits in its user's record, with an entry in the partition's index; features release it, a tick expires it
  (``pending_expired``), a full item refuses it (``pending_full``), both to the unmatched topic.
- **Coalesced publication.** A user's profile is published at once when it was not published within the last
  ``emit_interval_s``, else at the first tick after the interval (``0``: after every engagement). Users
  changed but not yet published are kept in the partition's index too, so a restart publishes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mmfeat.engagements import Engagement
from mmfeat.errors import RecordError, StateError, as_record_error
from mmfeat.profile import ProfileConfig, ProfileState, add, add_into, admit_into, profile_record
from mmfeat.schemas import UnmatchedEngagementV1, UserProfileV1, now_utc
from streams.state import ItemTokens, UserRecord, Waiting, decode_item, decode_user, encode_item, encode_user

Table = MutableMapping[bytes, bytes]


@dataclass(frozen=True)
class StageConfig:
    profile: ProfileConfig
    tokenizer: str
    features_topic: str
    pending_cap: int = 256  # engagements that may wait for one item's features
    pending_ttl_s: float = 600.0
    emit_interval_s: float = 0.5
    item_cache: int = 100_000  # item token lists kept in memory per worker
    user_cache: int = 50_000  # decoded user records kept in memory per worker


@dataclass
class Outputs:
    profiles: list[UserProfileV1] = field(default_factory=list)
    unmatched: list[UnmatchedEngagementV1] = field(default_factory=list)
    failed: list[tuple[Engagement, RecordError]] = field(default_factory=list)  # one engagement's defect: its DLQ record
    skipped: int = 0  # redelivered or duplicate engagements

    def extend(self, other: Outputs) -> None:
        self.profiles += other.profiles
        self.unmatched += other.unmatched
        self.failed += other.failed
        self.skipped += other.skipped


@dataclass
class _Index:
    """One partition's bookkeeping, stored under one key: who waits for which item since when, who is unpublished."""

    waiting: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # item -> user -> [count, oldest queued_at]
    dirty: set[str] = field(default_factory=set)

    def encode(self) -> bytes:
        return json.dumps({"waiting": self.waiting, "dirty": sorted(self.dirty)}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> _Index:
        if not raw:
            return cls()
        try:
            got = json.loads(raw)
            waiting = {str(i): {str(u): [float(c), float(t)] for u, (c, t) in us.items()} for i, us in got["waiting"].items()}
            return cls(waiting, {str(u) for u in got["dirty"]})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StateError(f"a partition index record does not parse ({type(e).__name__}: {e})") from e

    def waiting_for(self, item: str) -> int:
        return int(sum(c for c, _ in self.waiting.get(item, {}).values()))


def index_key(partition: int) -> bytes:
    return f"__index__/{partition}".encode()


class ProfileStage:
    def __init__(
        self, users: Table, items: Table, index: Table, cfg: StageConfig, clock: Callable[[], float],
        partition_of: Callable[[str], int] | None = None,
    ) -> None:  # fmt: skip
        self.users, self.items, self.index, self.cfg, self.clock = users, items, index, cfg, clock
        self.partition_of = partition_of  # user -> its partition: a user is written only in its own partition
        self._items: dict[str, ItemTokens | None] = {}  # a read cache of the items table (features are broadcast, then stable)
        self._users: dict[str, UserRecord] = {}  # decoded records this process wrote last (it is their partitions' only writer)
        self._published: dict[str, float] = {}  # user -> when its profile was last published by this process

    def forget(self) -> None:
        """Drop what is cached of the tables: the partitions this process owns changed (a rebalance, a recovery)."""
        self._items.clear()
        self._users.clear()

    # ---- reads ---------------------------------------------------------------------------------

    def user(self, user_id: str) -> UserRecord | None:
        """A user's record (a copy: the caller may change it)."""
        got = self._users.get(user_id)
        if got is None:
            raw = self.users.get(user_id.encode())
            if raw is None:
                return None
            got = decode_user(raw)
        return UserRecord(got.state, list(got.waiting))

    def item(self, item_id: str) -> ItemTokens | None:
        if item_id not in self._items:
            if len(self._items) >= self.cfg.item_cache:
                self._items.clear()
            raw = self.items.get(item_id.encode())
            self._items[item_id] = None if raw is None else decode_item(raw)
        return self._items[item_id]

    def _index(self, partition: int) -> _Index:
        return _Index.decode(self.index.get(index_key(partition)))

    # ---- engagements ---------------------------------------------------------------------------

    def on_engagements(self, partition: int, batch: list[Engagement]) -> Outputs:
        now, out, idx = self.clock(), Outputs(), self._index(partition)
        touched: dict[str, UserRecord] = {}
        changed: set[str] = set()
        for e in batch:
            try:
                if self.partition_of is not None and (q := self.partition_of(e.user_id)) != partition:
                    raise RecordError(f"user {e.user_id!r} belongs to partition {q}, not {partition}", reason="misrouted")
                if self._one(e, touched, idx, now, out):
                    changed.add(e.user_id)
            except Exception as err:  # one engagement's defect is its own DLQ record, the batch goes on
                out.failed.append((e, as_record_error(err)))
        self._finish(partition, touched, changed, idx, now, out)
        return out

    def _one(self, e: Engagement, touched: dict[str, UserRecord], idx: _Index, now: float, out: Outputs) -> bool:
        """Admit one engagement and apply it, or queue it; return whether the user's profile changed."""
        rec = touched.get(e.user_id)
        if rec is None:  # first touch in this batch: a copy the rest of the batch changes in place
            got = self.user(e.user_id)
            rec = UserRecord(got.state.clone(), got.waiting) if got else UserRecord(ProfileState(user_id=e.user_id))
            touched[e.user_id] = rec  # written back even unchanged: the local store may hold an update whose changelog died
        if not admit_into(rec.state, e, self.cfg.profile):
            out.skipped += 1
            waiting = [w for w in rec.waiting if w.engagement.item_id == e.item_id]
            if waiting:  # its index entry may have died with that changelog: write it again, from the record
                idx.waiting.setdefault(e.item_id, {})[e.user_id] = [float(len(waiting)), min(w.queued_at for w in waiting)]
            return False
        item = self.item(e.item_id)
        if item is not None:
            add_into(rec.state, e, item.tokens, self.cfg.profile, item.lineage)
            if self.cfg.emit_interval_s == 0:
                out.profiles.append(self.record(rec.state))
            return True
        if idx.waiting_for(e.item_id) >= self.cfg.pending_cap:
            out.unmatched.append(_unmatched("pending_full", Waiting(e, now)))
            return False
        rec.waiting.append(Waiting(e, now))
        _note_waiting(idx, e.item_id, e.user_id, now)
        return False

    # ---- features ------------------------------------------------------------------------------

    def on_features(self, partition: int, updates: list[tuple[str, ItemTokens | None]]) -> Outputs:
        """Item features (None: the item was deleted); engagements waiting for them are applied."""
        now, out, idx = self.clock(), Outputs(), self._index(partition)
        touched: dict[str, UserRecord] = {}
        for item_id, tokens in updates:
            key = item_id.encode()
            if tokens is None:
                if self.items.get(key) is not None:
                    del self.items[key]
                self._items.pop(item_id, None)
                continue
            self.items[key] = encode_item(tokens)
            self._items[item_id] = tokens
            for user_id in list(idx.waiting.pop(item_id, {})):
                rec = touched.get(user_id) or self.user(user_id)
                if rec is None:
                    continue
                ready = [w for w in rec.waiting if w.engagement.item_id == item_id]
                rec.waiting = [w for w in rec.waiting if w.engagement.item_id != item_id]
                for w in ready:
                    rec.state = add(rec.state, w.engagement, tokens.tokens, self.cfg.profile, tokens.lineage)
                    if self.cfg.emit_interval_s == 0:
                        out.profiles.append(self.record(rec.state))
                touched[user_id] = rec
        self._finish(partition, touched, {u for u, r in touched.items() if r.state.applied}, idx, now, out)
        return out

    # ---- ticks ---------------------------------------------------------------------------------

    def on_tick(self, partition: int) -> Outputs:
        """Expire engagements that waited longer than the TTL; publish users whose interval has passed."""
        now, out, idx = self.clock(), Outputs(), self._index(partition)
        touched: dict[str, UserRecord] = {}
        for item_id, waiting in sorted(idx.waiting.items()):
            for user_id, (_, oldest) in sorted(waiting.items()):
                if now - oldest <= self.cfg.pending_ttl_s:
                    continue
                rec = touched.get(user_id) or self.user(user_id)
                if rec is None:
                    del waiting[user_id]
                    continue
                gone = [w for w in rec.waiting if w.engagement.item_id == item_id and now - w.queued_at > self.cfg.pending_ttl_s]
                rec.waiting = [w for w in rec.waiting if w not in gone]
                out.unmatched.extend(_unmatched("pending_expired", w) for w in gone)
                kept = [w for w in rec.waiting if w.engagement.item_id == item_id]
                if kept:
                    waiting[user_id] = [float(len(kept)), min(w.queued_at for w in kept)]
                else:
                    del waiting[user_id]
                touched[user_id] = rec
        idx.waiting = {i: us for i, us in idx.waiting.items() if us}
        self._finish(partition, touched, set(), idx, now, out, tick=True)
        return out

    # ---- writes and publication ------------------------------------------------------------------

    def _finish(
        self, partition: int, touched: dict[str, UserRecord], changed: set[str], idx: _Index, now: float, out: Outputs, tick: bool = False
    ) -> None:
        """Write every touched record; publish the changed users that are due (the rest stay in the index's dirty set)."""
        before = self.index.get(index_key(partition))
        if len(self._users) + len(touched) > self.cfg.user_cache:
            self._users.clear()
        for user_id, rec in touched.items():
            self.users[user_id.encode()] = encode_user(rec)
            self._users[user_id] = rec
        if self.cfg.emit_interval_s > 0:
            idx.dirty |= changed
            due = [u for u in sorted(idx.dirty) if now - self._published.get(u, -1e18) >= self.cfg.emit_interval_s]
            for user_id in due:
                got = touched.get(user_id) or self.user(user_id)
                if got is not None:
                    out.profiles.append(self.record(got.state))
                self._published[user_id] = now
                idx.dirty.discard(user_id)
            if tick:  # forget publication times older than the interval: they no longer hold anything back
                self._published = {u: t for u, t in self._published.items() if now - t < self.cfg.emit_interval_s}
        after = idx.encode()
        if after != before:
            self.index[index_key(partition)] = after

    def record(self, state: ProfileState) -> UserProfileV1:
        """The published profile record of a state (the lookup's answer too)."""
        return profile_record(state, self.cfg.profile, tokenizer=self.cfg.tokenizer, features_topic=self.cfg.features_topic)


def _note_waiting(idx: _Index, item_id: str, user_id: str, now: float) -> None:
    count, oldest = idx.waiting.setdefault(item_id, {}).get(user_id, [0.0, now])
    idx.waiting[item_id][user_id] = [count + 1, min(oldest, now)]


def _unmatched(reason: str, w: Waiting) -> UnmatchedEngagementV1:
    e = w.engagement
    return UnmatchedEngagementV1(
        reason=reason,  # type: ignore[arg-type]  # one of the two literals
        engagement_id=e.id, user_id=e.user_id, item_id=e.item_id, event=e.event, value=e.value,
        ts=datetime.fromtimestamp(e.ts, UTC), queued_at=datetime.fromtimestamp(w.queued_at, UTC), dropped_at=now_utc(),
    )  # fmt: skip
