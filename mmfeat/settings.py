"""One validated, frozen settings object per process, read from ``MMFEAT_*`` env vars and flags.

Unknown ``MMFEAT_*`` variables are errors (a typo must not silently fall back to a default).
Only this module reads the environment; everything else receives a ``Settings``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmfeat.engagements import DEFAULT_EVENT_WEIGHTS, DEFAULT_MAX_VALUES
from mmfeat.errors import ConfigError
from mmfeat.tokenizers import TOKENIZERS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CAPTIONER = (
    PROJECT_ROOT / "captioner" / "assets" / "default"
)  # the trained default (mmfeat train-captioner), served by triton_models/captioner
ENV_PREFIX = "MMFEAT_"


class Settings(BaseSettings):
    """Everything a worker, the CLI or the embedded services need to know."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Where things run. None means "the embedded default that `mmfeat up` starts".
    bootstrap_servers: str | None = None
    triton_url: str | None = Field(default=None, description="Triton gRPC endpoint, host:port")
    state_dir: Path = PROJECT_ROOT / ".mmfeat"
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "mmfeat")
    model_repository: Path = PROJECT_ROOT / "triton_models"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    triton_http_port: int = 18000
    triton_grpc_port: int = 18001
    triton_metrics_port: int = 18002

    # Kafka security, mapped onto every client's keys (librdkafka's and Faust's) in mmfeat.kafka.config.
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

    # Topics (docs/topics.md).
    uploads_topic: str = "media.uploads"
    features_topic: str = "media.item-features.v1"
    deferred_topic: str = "media.uploads.deferred"
    dlq_topic: str = "media.uploads.dlq"
    group_id: str = "mmfeat-caption-worker"

    # Worker loop.
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_crashes_per_record: int = Field(
        default=2, ge=1, description="a record at the head of its partition when the worker died this often goes to the DLQ (crash_loop)"
    )
    poll_timeout_s: float = Field(default=0.5, gt=0)
    delivery_timeout_s: float = Field(default=60.0, gt=0)

    # Prometheus /metrics (0: off). The profiles app serves /metrics on its web port.
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=16067, ge=0, le=65535)
    backfill_metrics_port: int = Field(default=16068, ge=0, le=65535)
    metrics_interval_s: float = Field(default=5.0, gt=0, description="how often consumer lag is sampled")

    # Captioner on Triton.
    triton_model: str = "captioner"
    triton_timeout_s: float = Field(default=60.0, gt=0)
    triton_retries: int = Field(default=2, ge=0)
    triton_unavailable_backoff_s: float = Field(default=1.0, gt=0)
    prompt: str = ""

    # Fetch guards.
    allowed_roots: list[Path] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    max_media_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    fetch_timeout_s: float = Field(default=10.0, gt=0)

    # Gate.
    budget_rate_per_s: float = Field(default=200.0, gt=0)
    budget_burst: int = Field(default=400, ge=1)
    dedupe_path: Path | None = None

    # Features.
    tokenizers: list[str] = Field(default_factory=lambda: list(TOKENIZERS))
    tokenizer_dir: Path = ASSETS / "tokenizers"
    hash_buckets: int = Field(default=1 << 20, ge=16, le=1 << 31)
    caption_max_words: int = Field(default=32, ge=1)

    # User interest profiles (streams/, the Faust app).
    engagements_topic: str = "engagements"
    profiles_topic: str = "user.profiles.v1"
    engagements_dlq_topic: str = "engagements.dlq"
    unmatched_topic: str = "engagements.unmatched"
    profiles_app_id: str = "mmfeat-profiles"
    profiles_data_dir: Path | None = None
    profiles_web_host: str = "127.0.0.1"
    profiles_web_port: int = 16066
    profiles_partitions: int = Field(default=4, ge=1, description="partitions of the app's internal topics and tables")
    profile_tokenizer: str = Field(default="word", description="which token_ids list of the item features a profile aggregates")
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    event_max_values: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_VALUES), description="largest engagement value per event type (others: 1000)"
    )
    half_life_s: float = Field(default=7 * 86400.0, gt=0, description="time decay on event time")
    profile_top_k: int = Field(default=32, ge=1)
    profile_max_tokens: int = Field(default=4096, ge=1, description="state cap per user and event type")
    dedupe_horizon_s: float = Field(default=30 * 86400.0, gt=0, description="event time an applied engagement id is remembered")
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

    @model_validator(mode="after")
    def _security_complete(self) -> Settings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together (mutual TLS)")
        for path in (self.ssl_ca_location, self.ssl_certificate_location, self.ssl_key_location):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self

    @field_validator("tokenizers")
    @classmethod
    def _known_tokenizers(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in TOKENIZERS]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"tokenizers are distinct names of {', '.join(TOKENIZERS)} (bad: {unknown or names})")
        return names

    @field_validator("profile_tokenizer")
    @classmethod
    def _known_profile_tokenizer(cls, name: str) -> str:
        if name not in TOKENIZERS:
            raise ValueError(f"profile_tokenizer is one of {', '.join(TOKENIZERS)}")
        return name

    @field_validator("allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.lower() for h in hosts]

    @property
    def dedupe_store(self) -> Path:
        return self.dedupe_path or self.state_dir / f"dedupe-{self.group_id}"

    def to_env(self) -> dict[str, str]:
        """``MMFEAT_*`` variables that reproduce these settings in a subprocess (secrets included: pass with care)."""
        env = {}
        for name, value in self.model_dump().items():
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

    @property
    def profiles_state(self) -> Path:
        """The app's RocksDB folder: one per app id, so a replay (another app id) runs beside the live app."""
        if self.profiles_data_dir is not None:
            return self.profiles_data_dir / self.profiles_app_id
        return self.state_dir / f"faust-{self.profiles_app_id}"


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings: env vars, then explicit overrides (CLI flags), validated."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from e
