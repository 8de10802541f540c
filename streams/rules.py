"""The profile stage's settings as the pure rules take them: one place for the Faust app and the offline path."""

from __future__ import annotations

from mmfeat.engagements import EngagementRules
from mmfeat.profile import ProfileConfig
from mmfeat.settings import Settings
from streams.stage import StageConfig


def profile_config(settings: Settings) -> ProfileConfig:
    p = settings.profiles
    return ProfileConfig(
        event_weights=dict(p.event_weights), half_life_s=p.half_life_s, top_k=p.profile_top_k, max_tokens=p.profile_max_tokens,
        recent_ids=p.profile_recent_ids,
    )  # fmt: skip


def stage_config(settings: Settings) -> StageConfig:
    p = settings.profiles
    return StageConfig(
        profile=profile_config(settings), tokenizer=p.profile_tokenizer, features_topic=settings.topics.features_topic,
        pending_cap=p.pending_max_per_item, pending_ttl_s=p.pending_ttl_s, emit_interval_s=p.profile_emit_interval_s,
    )  # fmt: skip


def engagement_rules(settings: Settings) -> EngagementRules:
    return EngagementRules(dict(settings.profiles.event_weights), dict(settings.profiles.event_max_values), settings.profiles.max_future_s)
