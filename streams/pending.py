"""The bounded buffer of engagements waiting for their item's features: pure functions, no Faust.

Per item a list of entries ``{"e": <engagement dict>, "queued_at": <epoch s>}``, oldest first.
Nothing leaves the buffer silently: an entry is either released (the features arrived), or
returned as overflowed / expired for the caller to record on the unmatched topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmfeat.engagements import Engagement

Entry = dict[str, Any]


def enqueue(entries: Sequence[Entry], engagement: Engagement, now: float, cap: int) -> tuple[list[Entry], Entry | None]:
    """Add an engagement; return (new entries, the entry refused because the item's buffer is full).

    A redelivered engagement (same id) is already waiting and is not added twice.
    """
    if any(entry["e"]["id"] == engagement.id for entry in entries):
        return list(entries), None
    entry = {"e": engagement.to_dict(), "queued_at": now}
    if len(entries) >= cap:
        return list(entries), entry
    return [*entries, entry], None


def expire(entries: Sequence[Entry], now: float, ttl_s: float) -> tuple[list[Entry], list[Entry]]:
    """Split into (still waiting, waited longer than ttl_s)."""
    kept = [e for e in entries if now - e["queued_at"] <= ttl_s]
    gone = [e for e in entries if now - e["queued_at"] > ttl_s]
    return kept, gone


def oldest(entries: Sequence[Entry]) -> float | None:
    return min((e["queued_at"] for e in entries), default=None)
