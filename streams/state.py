"""The profiles app's table values as compact binary: a user's record (profile state + engagements waiting for
their item's features) and an item's tokens.

Binary, not JSON: a state is read and written once per user per batch, and its size, not a user's history,
sets the cost. Tables are changelog topics, so their bytes are read back as hostile: every length is
checked against the buffer, and anything that does not parse is a StateError (the store, not a record,
is broken). Layouts are versioned by their first byte.
"""

from __future__ import annotations

import array
import json
import math
import struct
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mmfeat.engagements import Engagement
from mmfeat.errors import StateError
from mmfeat.profile import ProfileState

USER_V1 = 1
ITEM_V1 = 1
NONE16 = 0xFFFF


@dataclass(frozen=True)
class Waiting:
    """An admitted engagement waiting for its item's features, since ``queued_at`` (epoch s, processing time)."""

    engagement: Engagement
    queued_at: float


@dataclass
class UserRecord:
    state: ProfileState
    waiting: list[Waiting] = field(default_factory=list)


@dataclass(frozen=True)
class ItemTokens:
    tokens: list[int]
    lineage: str | None = None


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values: object) -> None:
        self.parts.append(struct.pack("<" + fmt, *values))

    def text(self, s: str | None, wide: bool = False) -> None:
        if s is None:
            self.pack("H", NONE16)
            return
        data = s.encode()
        if len(data) >= NONE16:
            raise ValueError("text too long for a state record")
        self.pack("H", len(data))
        self.parts.append(data)

    def array(self, typecode: str, values: Collection[int | float]) -> None:
        """Little-endian, whatever the host (a changelog may be read on another machine). struct takes the values
        three times faster than array.array takes a dict view (this runs for every user written)."""
        self.parts.append(struct.pack(f"<{len(values)}{typecode}", *values))

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def unpack(self, fmt: str) -> tuple[object, ...]:
        size = struct.calcsize("<" + fmt)
        if self.at + size > len(self.data):
            raise ValueError("truncated")
        got = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += size
        return got

    def array(self, typecode: str, n: int) -> list[Any]:
        a = array.array(typecode)
        size = a.itemsize * n
        if self.at + size > len(self.data):
            raise ValueError("truncated array")
        a.frombytes(self.data[self.at : self.at + size])
        if sys.byteorder != "little":
            a.byteswap()
        self.at += size
        return a.tolist()

    def one(self, fmt: str) -> object:
        return self.unpack(fmt)[0]

    def text(self) -> str | None:
        n = int(self.one("H"))  # type: ignore[call-overload]
        if n == NONE16:
            return None
        if self.at + n > len(self.data):
            raise ValueError("truncated text")
        s = self.data[self.at : self.at + n].decode()
        self.at += n
        return s

    def end(self) -> None:
        if self.at != len(self.data):
            raise ValueError("trailing bytes")


def encode_user(rec: UserRecord) -> bytes:
    s, w = rec.state, _Writer()
    w.pack("BdddH", USER_V1, s.ref_ts, s.base_ts, s.half_life_s, len(s.stored))
    for ev, bucket in s.stored.items():
        w.text(ev)
        w.pack("II", s.counts.get(ev, 0), len(bucket))
        w.array("i", bucket.keys())
        w.array("d", bucket.values())
    extra = {ev: n for ev, n in s.counts.items() if ev not in s.stored}  # counted but never weighted (no tokens)
    w.pack("H", len(extra))
    for ev, n in extra.items():
        w.text(ev)
        w.pack("I", n)
    w.pack("H", len(s.offsets))
    for p, o in s.offsets.items():
        w.pack("Iq", p, o)
    w.pack("H", len(s.recent))
    for i in s.recent:
        w.text(i)
    w.pack("H", len(s.lineage))
    for name, n in s.lineage.items():
        w.text(name)
        w.pack("I", n)
    w.text(s.last_id)
    w.text(s.user_id)
    waiting = [{**rec_e.engagement.to_dict(), "queued_at": rec_e.queued_at} for rec_e in rec.waiting]
    data = json.dumps(waiting, separators=(",", ":")).encode() if waiting else b""
    w.pack("I", len(data))
    w.parts.append(data)
    return w.bytes()


def decode_user(data: bytes) -> UserRecord:
    """A user's record from its table bytes; StateError if they do not parse (bounded: lengths are checked)."""
    try:
        return _decode_user(data)
    except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError) as e:
        raise StateError(f"a profile state record does not parse ({type(e).__name__}: {e})") from e


def _decode_user(data: bytes) -> UserRecord:
    r = _Reader(data)
    version, ref_ts, base_ts, half_life, n_events = r.unpack("BdddH")
    if version != USER_V1 or not all(isinstance(x, float) and not math.isnan(x) for x in (ref_ts, base_ts, half_life)):
        raise ValueError(f"unknown state layout {version}")
    stored: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    for _ in range(int(n_events)):  # type: ignore[call-overload]
        ev = r.text() or ""
        count, n = (int(x) for x in r.unpack("II"))  # type: ignore[call-overload]
        if r.at + n * 12 > len(data):
            raise ValueError("truncated weights")
        tokens = r.array("i", n)
        weights = r.array("d", n)
        stored[ev] = dict(zip(tokens, weights, strict=True))
        counts[ev] = count
    for _ in range(int(r.one("H"))):  # type: ignore[call-overload]
        ev = r.text() or ""
        counts[ev] = int(r.one("I"))  # type: ignore[call-overload]
    offsets = {}
    for _ in range(int(r.one("H"))):  # type: ignore[call-overload]
        p, o = r.unpack("Iq")
        offsets[int(p)] = int(o)  # type: ignore[call-overload]
    recent = tuple(r.text() or "" for _ in range(int(r.one("H"))))  # type: ignore[call-overload]
    lineage = {}
    for _ in range(int(r.one("H"))):  # type: ignore[call-overload]
        name = r.text() or ""
        lineage[name] = int(r.one("I"))  # type: ignore[call-overload]
    last_id, user_id = r.text(), r.text()
    n = int(r.one("I"))  # type: ignore[call-overload]
    if r.at + n > len(data):
        raise ValueError("truncated waiting list")
    waiting = [Waiting(Engagement.from_dict(w), float(w["queued_at"])) for w in (json.loads(data[r.at : r.at + n]) if n else [])]
    r.at += n
    r.end()
    state = ProfileState(
        user_id=user_id or "", ref_ts=float(ref_ts), base_ts=float(base_ts), half_life_s=float(half_life),  # type: ignore[arg-type]
        stored=stored, counts=counts, offsets=offsets, recent=recent, last_id=last_id, lineage=lineage,
    )  # fmt: skip
    return UserRecord(state, waiting)


def encode_item(item: ItemTokens) -> bytes:
    w = _Writer()
    w.pack("BI", ITEM_V1, len(item.tokens))
    w.array("i", item.tokens)
    w.text(item.lineage)
    return w.bytes()


def decode_item(data: bytes) -> ItemTokens:
    try:
        r = _Reader(data)
        version, n = r.unpack("BI")
        if version != ITEM_V1 or r.at + 4 * int(n) > len(data):  # type: ignore[call-overload]
            raise ValueError("unknown or truncated item record")
        tokens = r.array("i", int(n))  # type: ignore[call-overload]
        lineage = r.text()
        r.end()
        return ItemTokens(tokens, lineage)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise StateError(f"an item tokens record does not parse ({type(e).__name__}: {e})") from e
