"""The user interest profile and its update rule: one pure function for the Faust agent and the offline path.

A profile holds, per event type, token -> weight, where each applied engagement adds
``event_weight * value`` to every distinct token of the item's caption, decayed on **event time**:

    weight(token) = sum over engagements e with the token of  w_e * 2 ** (-(ref_ts - ts_e) / half_life)

``ref_ts`` is the newest event time applied so far. An older (out-of-order) event is decayed to
``ref_ts`` when it is added; a newer one first rescales everything to its own time. The sum is
therefore the same in whatever order the engagements arrive, which is what lets the streaming path
(whose order the two repartitions shuffle) equal a recomputation from the log.

Idempotence: the ids of applied engagements are kept (``seen``) for ``dedupe_horizon_s`` of event
time behind ``ref_ts``; applying an engagement twice is a no-op inside that horizon.

The state keeps every token (a closed vocabulary keeps that small); ``top_k`` cuts only the
published features. ``max_tokens`` bounds the state for open vocabularies (the hash tokenizer):
when exceeded, the smallest weights are dropped, the one place where order can matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mmfeat.engagements import Engagement
from mmfeat.schemas import EventProfileV1, UserProfileV1, now_utc


@dataclass(frozen=True)
class ProfileConfig:
    event_weights: Mapping[str, float]
    half_life_s: float = 7 * 86400.0
    top_k: int = 32
    dedupe_horizon_s: float = 30 * 86400.0
    max_tokens: int = 4096


@dataclass
class ProfileState:
    """One user's profile. ``weights[event][token]`` is expressed at ``ref_ts`` (epoch seconds)."""

    user_id: str
    ref_ts: float = -math.inf
    weights: dict[str, dict[int, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    last_id: str | None = None  # the engagement that made this version (lineage, freshness)
    lineage: dict[str, int] = field(default_factory=dict)  # captioner/tokenizer versions of the items applied -> engagements

    @property
    def applied(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "ref_ts": self.ref_ts if math.isfinite(self.ref_ts) else None,
            "weights": {ev: [[t, w] for t, w in ws.items()] for ev, ws in self.weights.items()},
            "counts": dict(self.counts),
            "seen": dict(self.seen),
            "last_id": self.last_id,
            "lineage": dict(self.lineage),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileState:
        ref = d.get("ref_ts")
        return cls(
            user_id=str(d["user_id"]),
            ref_ts=-math.inf if ref is None else float(ref),
            weights={ev: {int(t): float(w) for t, w in pairs} for ev, pairs in d.get("weights", {}).items()},
            counts={ev: int(n) for ev, n in d.get("counts", {}).items()},
            seen={k: float(v) for k, v in d.get("seen", {}).items()},
            last_id=d.get("last_id"),
            lineage={k: int(n) for k, n in (d.get("lineage") or {}).items()},
        )


def _decay(dt_s: float, half_life_s: float) -> float:
    return math.pow(2.0, -dt_s / half_life_s)


LINEAGE_KEEP = 8  # distinct feature versions remembered per profile (the most used)


def apply_engagement(
    state: ProfileState | None, engagement: Engagement, tokens: Sequence[int], cfg: ProfileConfig, lineage: str | None = None
) -> tuple[ProfileState, bool]:
    """Return (new state, whether it changed). The input state is not modified.

    ``lineage`` names the feature version the tokens came from (mmfeat.features.item_features)."""
    e = engagement
    if state is not None and e.id in state.seen:
        return state, False
    old = state or ProfileState(user_id=e.user_id)
    ref = old.ref_ts
    if e.ts > ref:
        scale = _decay(e.ts - ref, cfg.half_life_s) if math.isfinite(ref) else 1.0
        weights = {ev: {t: w * scale for t, w in ws.items()} for ev, ws in old.weights.items()}
        ref = e.ts
        contribution = cfg.event_weights[e.event] * e.value
    else:
        weights = {ev: dict(ws) for ev, ws in old.weights.items()}
        contribution = cfg.event_weights[e.event] * e.value * _decay(ref - e.ts, cfg.half_life_s)
    bucket = weights.setdefault(e.event, {})
    for t in set(tokens):
        bucket[t] = bucket.get(t, 0.0) + contribution
    if len(bucket) > cfg.max_tokens:
        keep = sorted(bucket.items(), key=lambda tw: (-tw[1], tw[0]))[: cfg.max_tokens]
        weights[e.event] = dict(keep)
    horizon = ref - cfg.dedupe_horizon_s
    seen = {k: ts for k, ts in old.seen.items() if ts >= horizon}
    seen[e.id] = e.ts
    counts = dict(old.counts)
    counts[e.event] = counts.get(e.event, 0) + 1
    versions = dict(old.lineage)
    if lineage is not None:
        versions[lineage] = versions.get(lineage, 0) + 1
        if len(versions) > LINEAGE_KEEP:
            versions = dict(sorted(versions.items(), key=lambda kv: (-kv[1], kv[0]))[:LINEAGE_KEEP])
    state = ProfileState(user_id=old.user_id, ref_ts=ref, weights=weights, counts=counts, seen=seen, last_id=e.id, lineage=versions)
    return state, True


def top_tokens(weights: Mapping[int, float], k: int) -> tuple[list[int], list[float]]:
    """The k heaviest tokens, heaviest first; ties broken by token id so the output is deterministic."""
    best = sorted(weights.items(), key=lambda tw: (-tw[1], tw[0]))[:k]
    return [t for t, _ in best], [w for _, w in best]


def profile_features(state: ProfileState, cfg: ProfileConfig) -> dict[str, dict[str, Any]]:
    """Per event type: top-K token ids with their weights (at ``ref_ts``) and the engagement count."""
    out: dict[str, dict[str, Any]] = {}
    for ev in sorted(state.weights):
        ids, ws = top_tokens(state.weights[ev], cfg.top_k)
        out[ev] = {"token_ids": ids, "weights": ws, "count": state.counts.get(ev, 0)}
    return out


def build_profiles(
    engagements: Iterable[Engagement],
    item_tokens: Mapping[str, Sequence[int]],
    cfg: ProfileConfig,
    item_lineage: Mapping[str, str | None] | None = None,
) -> dict[str, ProfileState]:
    """Offline: fold engagements (in any order) into profiles. Engagements of items without tokens are skipped."""
    profiles: dict[str, ProfileState] = {}
    for e in engagements:
        tokens = item_tokens.get(e.item_id)
        if tokens is None:
            continue
        lineage = item_lineage.get(e.item_id) if item_lineage else None
        profiles[e.user_id], _ = apply_engagement(profiles.get(e.user_id), e, tokens, cfg, lineage)
    return profiles


def profile_record(state: ProfileState, cfg: ProfileConfig, *, tokenizer: str, features_topic: str) -> UserProfileV1:
    """The published value on user.profiles.v1 and the HTTP lookup's answer."""
    return UserProfileV1(
        user_id=state.user_id,
        tokenizer=tokenizer,
        features_topic=features_topic,
        half_life_s=cfg.half_life_s,
        as_of=datetime.fromtimestamp(state.ref_ts, UTC) if math.isfinite(state.ref_ts) else None,
        events={ev: EventProfileV1(**f) for ev, f in profile_features(state, cfg).items()},
        engagements=state.applied,
        last_engagement_id=state.last_id,
        feature_lineage=dict(state.lineage),
        updated_at=now_utc(),
    )


class ProfileTimeline:
    """Profiles as of any time, from engagements in event-time order: the point-in-time view offline paths need.

    ``before(user, t)`` applies every engagement with ``ts < t`` (strictly before: an example never
    sees its own engagement) and returns the user's state. Queries must come in non-decreasing ``t``.
    """

    def __init__(self, engagements: Iterable[tuple[Engagement, Sequence[int]]], cfg: ProfileConfig) -> None:
        self._events = sorted(engagements, key=lambda et: et[0].ts)
        self._next = 0
        self._t = -math.inf
        self.cfg = cfg
        self.states: dict[str, ProfileState] = {}

    def before(self, user_id: str, t: float) -> ProfileState | None:
        if t < self._t:
            raise ValueError(f"point-in-time queries must not go back in time ({t} < {self._t})")
        self._t = t
        while self._next < len(self._events) and self._events[self._next][0].ts < t:
            e, tokens = self._events[self._next]
            self.states[e.user_id], _ = apply_engagement(self.states.get(e.user_id), e, tokens, self.cfg)
            self._next += 1
        return self.states.get(user_id)


def features_at(state: ProfileState | None, cfg: ProfileConfig, t: float) -> dict[str, tuple[list[int], list[float]]]:
    """Per event type, the top-K token ids and their weights decayed to time ``t`` (>= the state's ref_ts)."""
    if state is None:
        return {}
    scale = _decay(t - state.ref_ts, cfg.half_life_s)
    return {ev: (f["token_ids"], [w * scale for w in f["weights"]]) for ev, f in profile_features(state, cfg).items()}
