"""The user interest profile and its update rule: one pure function for the Faust agent and the offline path.

A profile holds, per event type, token -> weight, where each applied engagement adds
``event_weight * value`` to every distinct token of the item's caption, decayed on **event time**:

    weight(token) = sum over engagements e with the token of  w_e * 2 ** (-(ref_ts - ts_e) / half_life)

``ref_ts`` is the newest event time applied so far. The sum is the same in whatever order the engagements
arrive, which is what lets the streaming path (whose order the repartition shuffles across source
partitions) equal a recomputation from the log.

The cost of one update does not grow with the user's history:
- **Lazy decay.** Weights are stored at a fixed scale, ``base_ts``: a contribution at ``ts`` is stored as
  ``c * 2 ** ((ts - base_ts) / half_life)``, and the weights at ``ref_ts`` are read as
  ``stored * 2 ** (-(ref_ts - base_ts) / half_life)``. A newer engagement then touches only its own tokens,
  not every token of the profile. The scale is moved (every stored weight rescaled once) only when the
  exponent would pass ``REBASE_HALF_LIVES``.
- **Dedupe without a growing set.** Engagements are identified by their source coordinates. Per source
  partition, the state keeps the next offset not yet admitted (``offsets``): an engagement below it was
  admitted already (a redelivery) and changes nothing. This is exact because each incarnation of the
  ingesting agent sends a user's engagements of one partition in offset order from where the group last
  committed. An ``event_id`` given by the producer is also remembered in a bounded window (``recent``, the
  last ``recent_ids``), which catches duplicates a producer wrote twice close together.

``admit`` is the dedupe decision, made once when an engagement arrives (it may then wait for its item's
features); ``add`` applies its weights. ``apply_engagement`` is both, for the offline path.

The state keeps every token (a closed vocabulary keeps that small); ``top_k`` cuts only the published
features. ``max_tokens`` bounds the state for open vocabularies (the hash tokenizer): when exceeded, the
smallest weights are dropped, the one place where order can matter.

Publishing does not scan the whole state either: weights only grow between two moves of the scale (event weights
and values are >= 0), so a token outside the last published top-K can enter it only if an engagement touched it
since. ``TopMemo`` remembers the last top-K ids and the tokens touched since, in memory only; ``profile_features``
then ranks those few instead of every token, with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from mmfeat.engagements import Engagement
from mmfeat.schemas import EventProfileV1, UserProfileV1, now_utc

REBASE_HALF_LIVES = 60.0  # 2**60: stored weights stay far from overflow, rescaled once in 60 half-lives
LINEAGE_KEEP = 8  # distinct feature versions remembered per profile (the most used)


@dataclass(frozen=True)
class ProfileConfig:
    event_weights: Mapping[str, float]
    half_life_s: float = 7 * 86400.0
    top_k: int = 32
    max_tokens: int = 4096
    recent_ids: int = 32  # producer-given event ids remembered per user (duplicates within this window are caught)


@dataclass
class TopMemo:
    """The last computed top-``k`` ids per event type, at scale ``base_ts``, and the tokens added to since (never
    stored). It serves a ranking of at most ``k``."""

    base_ts: float
    k: int
    tops: dict[str, list[int]]
    touched: dict[str, set[int]] = field(default_factory=dict)

    def copy(self) -> TopMemo:
        return TopMemo(self.base_ts, self.k, self.tops, {ev: set(ts) for ev, ts in self.touched.items()})


@dataclass
class ProfileState:
    """One user's profile. ``stored[event][token]`` is at the scale of ``base_ts``; ``weights`` reads them at ``ref_ts``."""

    user_id: str
    ref_ts: float = -math.inf
    base_ts: float = 0.0
    half_life_s: float = 0.0  # of the config that built it: what ``weights`` decays with
    stored: dict[str, dict[int, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # source partition -> next offset not yet admitted
    recent: tuple[str, ...] = ()  # the last producer-given event ids admitted
    last_id: str | None = None  # the engagement that made this version (lineage, freshness)
    lineage: dict[str, int] = field(default_factory=dict)  # captioner/tokenizer versions of the items applied -> engagements
    memo: TopMemo | None = field(default=None, compare=False, repr=False)  # a cache for profile_features, not state

    @property
    def applied(self) -> int:
        return sum(self.counts.values())

    def scale(self, half_life_s: float, at: float | None = None) -> float:
        """The factor from stored weights to weights at ``at`` (default ``ref_ts``)."""
        t = self.ref_ts if at is None else at
        return _decay(t - self.base_ts, half_life_s) if math.isfinite(t) else 1.0

    @property
    def weights(self) -> dict[str, dict[int, float]]:
        """Per event type, token -> weight at ``ref_ts`` (computed: the stored weights are at ``base_ts``)."""
        k = self.scale(self.half_life_s) if self.half_life_s > 0 else 1.0
        return {ev: {t: w * k for t, w in ws.items()} for ev, ws in self.stored.items()}

    def clone(self) -> ProfileState:
        """A copy that can be changed in place (``admit_into``, ``add_into``) without touching this one."""
        return replace(
            self, stored={ev: dict(ws) for ev, ws in self.stored.items()}, counts=dict(self.counts), offsets=dict(self.offsets),
            lineage=dict(self.lineage), memo=self.memo.copy() if self.memo else None,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "ref_ts": self.ref_ts if math.isfinite(self.ref_ts) else None,
            "base_ts": self.base_ts,
            "half_life_s": self.half_life_s,
            "stored": {ev: [[t, w] for t, w in ws.items()] for ev, ws in self.stored.items()},
            "counts": dict(self.counts),
            "offsets": {str(p): o for p, o in self.offsets.items()},
            "recent": list(self.recent),
            "last_id": self.last_id,
            "lineage": dict(self.lineage),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileState:
        ref = d.get("ref_ts")
        return cls(
            user_id=str(d["user_id"]),
            ref_ts=-math.inf if ref is None else float(ref),
            base_ts=float(d.get("base_ts", 0.0)),
            half_life_s=float(d.get("half_life_s", 0.0)),
            stored={ev: {int(t): float(w) for t, w in pairs} for ev, pairs in d.get("stored", {}).items()},
            counts={ev: int(n) for ev, n in d.get("counts", {}).items()},
            offsets={int(p): int(o) for p, o in (d.get("offsets") or {}).items()},
            recent=tuple(str(i) for i in d.get("recent") or ()),
            last_id=d.get("last_id"),
            lineage={k: int(n) for k, n in (d.get("lineage") or {}).items()},
        )


def _decay(dt_s: float, half_life_s: float) -> float:
    return math.pow(2.0, -dt_s / half_life_s)


def _producer_id(e: Engagement) -> str | None:
    """The engagement's producer-given event id, or None when its id is its source coordinates."""
    if e.partition is not None and e.offset is not None and e.id.endswith(f"[{e.partition}]@{e.offset}"):
        return None
    return e.id


def admit_into(state: ProfileState, e: Engagement, cfg: ProfileConfig) -> bool:
    """Whether ``e`` is new for this user (not a redelivery or a near duplicate); if so, ``state`` remembers it.

    Changes ``state`` in place (``admit`` is the pure form)."""
    if e.partition is not None and e.offset is not None and e.offset < state.offsets.get(e.partition, 0):
        return False
    pid = _producer_id(e)
    if pid is not None and pid in state.recent:
        return False
    if e.partition is not None and e.offset is not None:
        state.offsets[e.partition] = e.offset + 1
    if pid is not None and cfg.recent_ids > 0:
        state.recent = (*state.recent, pid)[-cfg.recent_ids :]
    return True


def add_into(state: ProfileState, e: Engagement, tokens: Sequence[int], cfg: ProfileConfig, lineage: str | None = None) -> None:
    """Apply ``e`` to ``state`` in place: its weights, its count, its lineage. Only the engagement's own tokens are
    touched (the scale moves once in ``REBASE_HALF_LIVES``), so the cost does not grow with the user's history."""
    if not math.isfinite(state.ref_ts):
        state.base_ts = e.ts
    elif (e.ts - state.base_ts) / cfg.half_life_s > REBASE_HALF_LIVES:  # move the scale before stored weights grow too large
        k = _decay(e.ts - state.base_ts, cfg.half_life_s)
        state.stored = {ev: {t: w * k for t, w in ws.items()} for ev, ws in state.stored.items()}
        state.base_ts = e.ts
        state.memo = None  # rounding in the rescale may tie weights that were apart
    contribution = cfg.event_weights[e.event] * e.value * _decay(state.base_ts - e.ts, cfg.half_life_s)
    bucket = state.stored.setdefault(e.event, {})
    for t in set(tokens):
        bucket[t] = bucket.get(t, 0.0) + contribution
    if state.memo is not None:
        state.memo.touched.setdefault(e.event, set()).update(tokens)
    if len(bucket) > cfg.max_tokens:
        state.stored[e.event] = dict(sorted(bucket.items(), key=lambda tw: (-tw[1], tw[0]))[: cfg.max_tokens])
    if lineage is not None:
        state.lineage[lineage] = state.lineage.get(lineage, 0) + 1
        if len(state.lineage) > LINEAGE_KEEP:
            state.lineage = dict(sorted(state.lineage.items(), key=lambda kv: (-kv[1], kv[0]))[:LINEAGE_KEEP])
    state.ref_ts, state.half_life_s, state.last_id = max(state.ref_ts, e.ts), cfg.half_life_s, e.id
    state.counts[e.event] = state.counts.get(e.event, 0) + 1


def admit(state: ProfileState | None, e: Engagement, cfg: ProfileConfig) -> tuple[ProfileState, bool]:
    """``admit_into`` on a copy: the input state is not modified."""
    old = state or ProfileState(user_id=e.user_id)
    copy = replace(old, offsets=dict(old.offsets))
    return (copy, True) if admit_into(copy, e, cfg) else (old, False)


def add(state: ProfileState, e: Engagement, tokens: Sequence[int], cfg: ProfileConfig, lineage: str | None = None) -> ProfileState:
    """``add_into`` on a copy of what it changes (the engagement's event type, not every bucket): the input is not modified."""
    stored = {**state.stored, e.event: dict(state.stored.get(e.event, {}))}
    memo = state.memo.copy() if state.memo else None
    copy = replace(state, stored=stored, counts=dict(state.counts), lineage=dict(state.lineage), memo=memo)
    add_into(copy, e, tokens, cfg, lineage)
    return copy


def apply_engagement(
    state: ProfileState | None, engagement: Engagement, tokens: Sequence[int], cfg: ProfileConfig, lineage: str | None = None
) -> tuple[ProfileState, bool]:
    """Return (new state, whether it changed): ``admit`` then ``add``. The input state is not modified.

    ``lineage`` names the feature version the tokens came from (mmfeat.features.item_features)."""
    admitted, new = admit(state, engagement, cfg)
    if not new:
        return admitted, False
    return add(admitted, engagement, tokens, cfg, lineage), True


def top_tokens(weights: Mapping[int, float], k: int, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """The k heaviest tokens, heaviest first, times ``scale``; ties broken by token id so the output is deterministic."""
    if len(weights) > k:  # the k-th weight bounds the candidates: sort plain floats first, then only the few tuples
        cut = sorted(weights.values(), reverse=True)[k - 1]
        candidates = [(t, w) for t, w in weights.items() if w >= cut]
    else:
        candidates = list(weights.items())
    best = sorted(candidates, key=lambda tw: (-tw[1], tw[0]))[:k]
    return [t for t, _ in best], [w * scale for _, w in best]


def profile_features(state: ProfileState, cfg: ProfileConfig) -> dict[str, dict[str, Any]]:
    """Per event type: top-K token ids with their weights (at ``ref_ts``) and the engagement count. With a memo at the
    state's scale, only the last top-K and the tokens touched since are ranked (see the module's docstring); the
    memo is then renewed."""
    k = state.scale(cfg.half_life_s)
    memo = state.memo
    if memo is not None and (memo.base_ts != state.base_ts or memo.k < cfg.top_k):
        memo = None
    out: dict[str, dict[str, Any]] = {}
    for ev in sorted(state.stored):
        bucket = state.stored[ev]
        if memo is not None and ev in memo.tops:
            few = {t: bucket[t] for t in (*memo.tops[ev], *memo.touched.get(ev, ())) if t in bucket}
            ids, ws = top_tokens(few, cfg.top_k, k)
        else:
            ids, ws = top_tokens(bucket, cfg.top_k, k)
        out[ev] = {"token_ids": ids, "weights": ws, "count": state.counts.get(ev, 0)}
    state.memo = TopMemo(state.base_ts, cfg.top_k, {ev: f["token_ids"] for ev, f in out.items()})
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
    # Built without validation: what is published goes through mmfeat.schemas.encode_record, which reads it back
    # through the schema (once, not twice per record: this runs for every profile the app publishes).
    return UserProfileV1.model_construct(
        user_id=state.user_id,
        tokenizer=tokenizer,
        features_topic=features_topic,
        half_life_s=cfg.half_life_s,
        as_of=datetime.fromtimestamp(state.ref_ts, UTC) if math.isfinite(state.ref_ts) else None,
        events={ev: EventProfileV1.model_construct(**f) for ev, f in profile_features(state, cfg).items()},
        engagements=state.applied,
        last_engagement_id=state.last_id,
        feature_lineage=dict(state.lineage),
        source_offsets={str(p): o for p, o in sorted(state.offsets.items())},
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
    k = state.scale(cfg.half_life_s, t)
    return {ev: top_tokens(state.stored[ev], cfg.top_k, k) for ev in sorted(state.stored)}
