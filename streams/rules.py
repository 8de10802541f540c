"""The profile stage's settings as the pure rules take them: one place for the Faust app and the offline path."""

from __future__ import annotations

from mmfeat.engagements import EngagementRules
from mmfeat.profile import ProfileConfig
from mmfeat.settings import Settings


def profile_config(settings: Settings) -> ProfileConfig:
    return ProfileConfig(
        event_weights=dict(settings.profiles.event_weights),
        half_life_s=settings.profiles.half_life_s,
        top_k=settings.profiles.profile_top_k,
        dedupe_horizon_s=settings.profiles.dedupe_horizon_s,
        max_tokens=settings.profiles.profile_max_tokens,
    )


def engagement_rules(settings: Settings) -> EngagementRules:
    return EngagementRules(dict(settings.profiles.event_weights), dict(settings.profiles.event_max_values), settings.profiles.max_future_s)
