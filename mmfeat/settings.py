"""One validated, frozen settings object per process, in sections, read from ``MMFEAT_*`` env vars and flags.

Each stage reads its section (``settings.worker``, ``settings.profiles``, ...); the environment variables
keep their flat names (``MMFEAT_BATCH_SIZE`` is ``settings.worker.batch_size``), so every field name is
unique across sections. Unknown ``MMFEAT_*`` variables are errors (a typo must not silently fall back to a
default). Only this module reads the environment; everything else receives a ``Settings``.
"""

from __future__ import annotations

import json
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS, DEFAULT_MAX_VALUES
from mmfeat.errors import ConfigError
from mmfeat.tokenizers import TOKENIZERS, published_by_default

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CAPTIONER = PROJECT_ROOT / "captioner" / "assets" / "default"  # the trained default, served by triton_models/captioner
ENV_PREFIX = "MMFEAT_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Services(_Section):
    """The embedded services `mmfeat up` starts (docs/services.md)."""

    state_dir: Path = PROJECT_ROOT / ".mmfeat"
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "mmfeat")
    model_repository: Path = PROJECT_ROOT / "triton_models"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_brokers: int = Field(default=1, ge=1, le=9, description="KRaft nodes `mmfeat up` starts; node i on the ports + 100 * (i - 1)")
    kafka_cluster_id: str | None = Field(
        default=None,
        description="the cluster id a node formats with (containers: their nodes share no folder); default: kept in the state dir",
    )
    triton_http_port: int = 18000
    triton_grpc_port: int = 18001
    triton_metrics_port: int = 18002


class Kafka(_Section):
    """Where the cluster is and how to talk to it, mapped onto every client's keys in mmfeat/kafka/config.py."""

    bootstrap_servers: str | None = None  # None: the broker `mmfeat up` started
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = Field(default=None, description="PEM file of the CA(s) that signed the brokers' certificates")
    ssl_certificate_location: Path | None = Field(default=None, description="client certificate (PEM), for mutual TLS")
    ssl_key_location: Path | None = Field(default=None, description="the client certificate's private key (PEM)")
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: bool = Field(default=True, description="check that the broker's certificate names its host")
    kafka_log_level: int = Field(default=4, ge=0, le=7, description="librdkafka syslog level: 3 errors, 4 warnings, 6 info")
    delivery_timeout_s: float = Field(default=60.0, gt=0)
    replication_factor: int | None = Field(
        default=None, ge=1, description="replicas of every topic mmfeat creates; None: 3, or the brokers there are if fewer"
    )

    @model_validator(mode="after")
    def _security_complete(self) -> Kafka:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (mutual TLS)")
        for path in (self.ssl_ca_location, self.ssl_certificate_location, self.ssl_key_location):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self


class Topics(_Section):
    """The topics mmfeat reads and writes (docs/topics.md; mmfeat/topics.py creates them)."""

    uploads_topic: str = "media.uploads"
    features_topic: str = "media.item-features.v1"
    deferred_topic: str = "media.uploads.deferred"
    dlq_topic: str = "media.uploads.dlq"
    engagements_topic: str = "engagements"
    profiles_topic: str = "user.profiles.v1"
    engagements_dlq_topic: str = "engagements.dlq"
    unmatched_topic: str = "engagements.unmatched"


class Worker(_Section):
    """The caption worker's loop and gate (workers/)."""

    group_id: str = "mmfeat-caption-worker"
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_crashes_per_record: int = Field(
        default=2, ge=1, description="a record at the head of its partition when the worker died this often goes to the DLQ (crash_loop)"
    )
    poll_timeout_s: float = Field(default=0.5, gt=0)
    budget_rate_per_s: float = Field(default=200.0, gt=0)
    budget_burst: int = Field(default=400, ge=1)
    ocr_budget_rate_per_s: float = Field(default=20.0, gt=0, description="OCR requests per second (its own token bucket)")
    ocr_budget_burst: int = Field(default=100, ge=1)
    asr_budget_rate_per_s: float = Field(default=5.0, gt=0, description="ASR requests per second (its own token bucket)")
    asr_budget_burst: int = Field(default=50, ge=1)
    dedupe_path: Path | None = None


class Fetch(_Section):
    """What media may be fetched, how much and how long (workers/fetch.py, docs/guarantees.md)."""

    allowed_roots: list[Path] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    max_media_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    fetch_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.lower() for h in hosts]


class Media(_Section):
    """Bounds on decoding video (mmfeat/media/video.py): every one is checked, from the header where it can be."""

    max_video_seconds: float = Field(default=600.0, gt=0, description="longest video, declared or decoded")
    max_video_pixels: int = Field(default=3840 * 2160, gt=0, description="largest frame (width x height)")
    max_video_frames: int = Field(default=20_000, gt=0, description="most frames decoded from one video")
    video_decode_timeout_s: float = Field(default=30.0, gt=0, description="wall-clock deadline of one video's decode")
    video_memory_mb: int = Field(default=1024, ge=64, description="address-space cap of the decoding process")
    max_audio_seconds: float = Field(default=600.0, gt=0, description="longest sound (an audio upload, or a video's track)")
    video_frames: int = Field(default=5, ge=1, le=64, description="frames sampled per video (uniform, plus scene changes)")
    video_scene_threshold: float = Field(default=0.15, gt=0, le=1, description="share of changed pixels counted as a scene change")


class Triton(_Section):
    """The captioner on Triton (workers/triton_client.py)."""

    triton_url: str | None = Field(default=None, description="Triton gRPC endpoint, host:port")  # None: the one `mmfeat up` started
    triton_model: str = "captioner"
    triton_timeout_s: float = Field(default=60.0, gt=0)
    triton_retries: int = Field(default=2, ge=0)
    triton_unavailable_backoff_s: float = Field(default=1.0, gt=0)
    prompt: str = ""
    ocr_model: str = Field(default="", description="Triton model reading on-screen text (triton_models/ocr: ocr); empty: no OCR")
    asr_model: str = Field(default="", description="Triton model transcribing speech (triton_models/asr: asr); empty: no ASR")


class Features(_Section):
    """Caption -> feature record (mmfeat/features.py, mmfeat/tokenizers/)."""

    tokenizers: list[str] = Field(default_factory=published_by_default)
    tokenizer_dir: Path = ASSETS / "tokenizers"
    hash_buckets: int = Field(default=1 << 20, ge=16, le=1 << 31)
    caption_max_words: int = Field(default=32, ge=1)
    feature_schema: int = Field(default=2, ge=1, le=2, description="version of the feature records published")
    post_max_words: int = Field(default=64, ge=1, description="a post's normalized text is cut to this many words")
    description_max_words: int = Field(default=64, ge=1, description="a video's merged frame captions are cut to this many words")

    @field_validator("tokenizers")
    @classmethod
    def _known_tokenizers(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in TOKENIZERS]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"tokenizers are distinct names of {', '.join(TOKENIZERS)} (bad: {unknown or names})")
        return names


class Metrics(_Section):
    """Prometheus /metrics (0: off). The profiles app serves /metrics on its web port."""

    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=16067, ge=0, le=65535)
    backfill_metrics_port: int = Field(default=16068, ge=0, le=65535)
    metrics_interval_s: float = Field(default=5.0, gt=0, description="how often consumer lag is sampled")


class Profiles(_Section):
    """User interest profiles (streams/, the Faust app; mmfeat/profile.py)."""

    profiles_app_id: str = "mmfeat-profiles"
    profiles_data_dir: Path | None = None
    profiles_web_host: str = "127.0.0.1"
    profiles_web_port: int = 16066
    profiles_lookup_token: SecretStr | None = Field(
        default=None, description="when set, GET /profiles/{id} needs `Authorization: Bearer <token>` (/metrics stays open)"
    )
    profiles_partitions: int = Field(default=4, ge=1, description="partitions of the app's internal topics and tables")
    profile_tokenizer: str = Field(default="word", description="which token_ids list of the item features a profile aggregates")
    profile_sources: list[str] = Field(
        default_factory=lambda: ["caption"], min_length=1, description="which sources' ids of a v2 feature record a profile aggregates"
    )
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    event_max_values: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_VALUES), description="largest engagement value per event type (others: 1000)"
    )
    half_life_s: float = Field(default=7 * 86400.0, gt=0, description="time decay on event time")
    profile_top_k: int = Field(default=32, ge=1)
    profile_max_tokens: int = Field(default=4096, ge=1, description="state cap per user and event type")
    profile_recent_ids: int = Field(default=32, ge=0, le=4096, description="producer-given event ids remembered per user")
    profile_emit_interval_s: float = Field(
        default=0.5, ge=0, description="a user's profile is published at most this often (0: every change)"
    )
    profiles_batch_max: int = Field(default=1000, ge=1, le=100_000, description="engagements taken per micro-batch")
    profiles_batch_window_s: float = Field(default=0.05, gt=0, description="how long a micro-batch waits to fill")
    profiles_take_max: int = Field(default=64, ge=1, le=10_000, description="by-user messages the profile stage takes at once")
    profiles_standby_replicas: int = Field(default=0, ge=0, description="Faust standby replicas of the tables on other workers")
    profiles_rocksdb_write_buffer_mb: int = Field(
        default=4, ge=1, le=1024, description="each table partition's RocksDB memtable (two at most); Faust's default is 64 MB x 3"
    )
    profiles_rocksdb_block_cache_mb: int = Field(
        default=16, ge=1, le=65536, description="each table partition's RocksDB block cache; Faust's default is 2 GB"
    )
    profiles_session_timeout_s: float = Field(
        default=30.0, ge=6, le=300, description="a worker silent this long is dropped from the group; its partitions move"
    )
    pending_max_per_item: int = Field(default=256, ge=1, description="engagements waiting for one item's features")
    pending_ttl_s: float = Field(default=600.0, gt=0, description="how long an engagement waits for its item's features")
    pending_tick_s: float = Field(default=5.0, gt=0, description="how often waiting engagements are checked for expiry")
    max_future_s: float = Field(default=300.0, ge=0, description="engagements further in the future are rejected")
    profiles_commit_s: float = Field(default=1.0, gt=0, description="Faust offset commit interval")
    features_first_timeout_s: float = Field(
        default=600.0, ge=0, description="at start, engagements wait up to this long for the features topic to be read to its end"
    )

    @field_validator("event_weights")
    @classmethod
    def _finite_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in weights.items() if not math.isfinite(w) or w < 0]
        if bad or not weights:
            raise ValueError(f"event weights must be finite and >= 0 (bad: {bad or 'empty'})")
        return weights

    @field_validator("event_max_values")
    @classmethod
    def _finite_maxima(cls, maxima: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in maxima.items() if not math.isfinite(v) or v < 0 or v > 1e9]
        if bad:
            raise ValueError(f"event maximum values must be in [0, 1e9] (bad: {bad})")
        return maxima

    @field_validator("profile_tokenizer")
    @classmethod
    def _known_profile_tokenizer(cls, name: str) -> str:
        if name not in TOKENIZERS:
            raise ValueError(f"profile_tokenizer is one of {', '.join(TOKENIZERS)}")
        return name


SECTIONS: dict[str, type[_Section]] = {
    "services": Services, "kafka": Kafka, "topics": Topics, "worker": Worker, "fetch": Fetch, "media": Media, "triton": Triton,
    "features": Features, "metrics": Metrics, "profiles": Profiles,
}  # fmt: skip
FIELDS: dict[str, str] = {field: section for section, model in SECTIONS.items() for field in model.model_fields}  # field -> section
assert len(FIELDS) == sum(len(m.model_fields) for m in SECTIONS.values()), "field names must be unique across sections"


class Settings(BaseModel):
    """Everything a worker, the CLI or the embedded services need to know, one section per stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: Services = Field(default_factory=Services)
    kafka: Kafka = Field(default_factory=Kafka)
    topics: Topics = Field(default_factory=Topics)
    worker: Worker = Field(default_factory=Worker)
    fetch: Fetch = Field(default_factory=Fetch)
    media: Media = Field(default_factory=Media)
    triton: Triton = Field(default_factory=Triton)
    features: Features = Field(default_factory=Features)
    metrics: Metrics = Field(default_factory=Metrics)
    profiles: Profiles = Field(default_factory=Profiles)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Settings:
        """Validated settings from flat field names (``{"batch_size": 8}``), as the environment names them."""
        return cls.model_validate(_by_section(values))

    def value(self, name: str) -> Any:
        """A setting by its flat name."""
        return getattr(getattr(self, FIELDS[name]), name)

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with settings replaced by flat name (not validated again, as model_copy; tests and services use it)."""
        by_section = _by_section(changes)
        return self.model_copy(update={sec: getattr(self, sec).model_copy(update=upd) for sec, upd in by_section.items()})

    def flat(self) -> dict[str, Any]:
        return {name: self.value(name) for name in FIELDS}

    @property
    def dedupe_store(self) -> Path:
        return self.worker.dedupe_path or self.services.state_dir / f"dedupe-{self.worker.group_id}"

    @property
    def profiles_state(self) -> Path:
        """The app's RocksDB folder: one per app id, so a replay (another app id) runs beside the live app."""
        p = self.profiles
        if p.profiles_data_dir is not None:
            return p.profiles_data_dir / p.profiles_app_id
        return self.services.state_dir / f"faust-{p.profiles_app_id}"

    def to_env(self) -> dict[str, str]:
        """``MMFEAT_*`` variables that reproduce these settings in a subprocess (secrets included: pass with care)."""
        env = {}
        for name, value in self.flat().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = json.dumps([str(v) for v in value])
            elif isinstance(value, dict):
                value = json.dumps(value)
            env[ENV_PREFIX + name.upper()] = str(value)
        return env


def _by_section(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat names -> {section: {name: value}}; an unknown name is a ConfigError."""
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise ConfigError(f"unknown setting {name}; see docs/configuration.md")
        nested.setdefault(FIELDS[name], {})[name] = value
    return nested


def _from_env(name: str, raw: str) -> Any:
    """An env var's value: JSON for list and dict settings, the string itself otherwise (pydantic converts it)."""
    annotation = SECTIONS[FIELDS[name]].model_fields[name].annotation
    if typing.get_origin(annotation) in (list, dict):
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ConfigError(f"invalid setting {name} ({ENV_PREFIX}{name.upper()}): not JSON ({e})") from e
    return raw


# Variables that no longer exist: refused with what replaced them, never ignored silently.
RENAMED = {
    "MMFEAT_DEDUPE_HORIZON_S": "redeliveries are recognized by source offsets now; MMFEAT_PROFILE_RECENT_IDS bounds the event-id window",
}


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings: env vars, then explicit overrides (CLI flags), validated."""
    gone = sorted(k for k in os.environ if k in RENAMED)
    if gone:
        raise ConfigError(f"{gone[0]} is no longer a setting: {RENAMED[gone[0]]} (docs/configuration.md)")
    known = {ENV_PREFIX + name.upper(): name for name in FIELDS}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
    values = {known[k]: _from_env(known[k], v) for k, v in os.environ.items() if k in known}
    values |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.of(values)
    except ValidationError as e:
        first = e.errors()[0]
        where = str(first["loc"][-1]) if len(first["loc"]) > 1 else ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from e
