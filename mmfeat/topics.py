"""Every topic mmfeat owns, with its key and cleanup policy, in one place (docs/topics.md).

- ``upload_topics``: the caption worker's input and outputs;
- ``profile_topics``: the profiles app's inputs and outputs;
- ``internal_topics`` / ``app_topics``: the Faust app's own (repartitions, changelogs, leader election),
  named after its app id so a replay app (another id) runs beside the live one.
The app does not declare topics itself; these are created up front (`mmfeat up`, `mmfeat profiles`).
"""

from __future__ import annotations

from mmfeat.kafka.client import TopicSpec, ensure_topics
from mmfeat.settings import Settings

TABLES = ("items", "profiles", "index")  # the profiles app's tables, each changelogged (streams/stage.py)


def upload_topics(settings: Settings, partitions: int = 4) -> list[TopicSpec]:
    s = settings
    return [
        TopicSpec(s.topics.uploads_topic, partitions),
        TopicSpec(s.topics.features_topic, partitions, compacted=True),
        TopicSpec(s.topics.deferred_topic, partitions),
        TopicSpec(s.topics.dlq_topic, partitions),
    ]


def profile_topics(settings: Settings, partitions: int = 4) -> list[TopicSpec]:
    s = settings
    return [
        TopicSpec(s.topics.engagements_topic, partitions),
        TopicSpec(s.topics.features_topic, partitions, compacted=True),
        TopicSpec(s.topics.profiles_topic, partitions, compacted=True),
        TopicSpec(s.topics.engagements_dlq_topic, partitions),
        TopicSpec(s.topics.unmatched_topic, partitions),
    ]


def internal_topics(settings: Settings) -> dict[str, str]:
    """The profiles app's own topic names: the repartition by user, the leader topic, one changelog per table."""
    app_id = settings.profiles.profiles_app_id
    names = {"by_user": f"{app_id}-by-user", "leader": f"{app_id}-__assignor-__leader"}
    names.update({t: f"{app_id}-{t}-changelog" for t in TABLES})
    return names


def app_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the profiles app reads or writes, with ``profiles_partitions`` partitions."""
    p = settings.profiles.profiles_partitions
    names = internal_topics(settings)
    return [
        *profile_topics(settings, p),
        TopicSpec(names["by_user"], p),
        TopicSpec(names["leader"], 1),  # Faust's leader election topic
        *(TopicSpec(names[t], p, compacted=True) for t in TABLES),
    ]


def all_topics(settings: Settings, partitions: int = 4) -> list[TopicSpec]:
    """What `mmfeat up` creates: the worker's and the profiles app's public topics (features once)."""
    seen: dict[str, TopicSpec] = {}
    for spec in [*upload_topics(settings, partitions), *profile_topics(settings, partitions)]:
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def create_topics(settings: Settings, partitions: int = 4) -> list[str]:
    return ensure_topics(settings, all_topics(settings, partitions))
