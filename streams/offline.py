"""The offline path: profiles recomputed from the topics with the same parse and update functions
as the Faust app. Tests use it as ground truth; backfills and the evaluation build on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mmfeat.engagements import Engagement
from mmfeat.errors import RecordError
from mmfeat.features import item_features
from mmfeat.kafka.reader import TopicRecord, read_topic
from mmfeat.profile import ProfileConfig, ProfileState, build_profiles
from mmfeat.settings import Settings
from streams.rules import engagement_rules


def valid_engagements(records: Iterable[TopicRecord], settings: Settings) -> list[Engagement]:
    """The engagements the app accepts; the rest are what its DLQ holds."""
    out = []
    rules = engagement_rules(settings)
    for r in records:
        try:
            out.append(rules.parse(r.value, topic=r.topic, partition=r.partition, offset=r.offset, timestamp_s=r.timestamp_ms / 1000))
        except RecordError:
            continue
    return out


def item_tokens(
    records: Iterable[TopicRecord], tokenizer: str, lineage: dict[str, str | None] | None = None, sources: Sequence[str] = ("caption",)
) -> dict[str, list[int]]:
    """Latest token list per item over ``sources`` (what compaction keeps); a tombstone removes the item.
    ``lineage``, when given, is filled with each item's feature version."""
    tokens: dict[str, list[int]] = {}
    for r in records:
        if r.key is None:
            continue
        if r.value is None:
            tokens.pop(r.key, None)
            continue
        try:
            tokens[r.key], version = item_features(r.value, tokenizer, sources)
        except RecordError:
            continue
        if lineage is not None:
            lineage[r.key] = version
    return tokens


def recompute_profiles(settings: Settings, cfg: ProfileConfig) -> dict[str, ProfileState]:
    """Every user's profile from the engagement log and the item features, in log order."""
    engagements = valid_engagements(read_topic(settings, settings.topics.engagements_topic, timeout_s=5), settings)
    lineage: dict[str, str | None] = {}
    p = settings.profiles
    tokens = item_tokens(read_topic(settings, settings.topics.features_topic, timeout_s=5), p.profile_tokenizer, lineage, p.profile_sources)
    return build_profiles(engagements, tokens, cfg, lineage)
