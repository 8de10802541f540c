"""One validated, frozen settings object per process, read from ``MMFEAT_*`` env vars and flags.

Unknown ``MMFEAT_*`` variables are errors (a typo must not silently fall back to a default).
Only this module reads the environment; everything else receives a ``Settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmfeat.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CAPTIONER = ASSETS / "captioner"  # the trained default (mmfeat train-captioner), served by triton_models/captioner
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

    # Kafka security, mapped onto librdkafka's dotted keys in mmfeat.kafka.config.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    kafka_log_level: int = Field(default=4, ge=0, le=7, description="librdkafka syslog level: 3 errors, 4 warnings, 6 info")

    # Topics (docs/topics.md).
    uploads_topic: str = "media.uploads"
    features_topic: str = "media.item-features.v1"
    deferred_topic: str = "media.uploads.deferred"
    dlq_topic: str = "media.uploads.dlq"
    group_id: str = "mmfeat-caption-worker"

    # Worker loop.
    batch_size: int = Field(default=16, ge=1, le=1024)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    delivery_timeout_s: float = Field(default=60.0, gt=0)

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
    tokenizers: list[str] = Field(default_factory=lambda: ["sp", "word", "hash", "decoder"])
    tokenizer_dir: Path = ASSETS / "tokenizers"
    hash_buckets: int = Field(default=1 << 20, ge=16)
    caption_max_words: int = Field(default=32, ge=1)

    @field_validator("allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.lower() for h in hosts]

    @property
    def dedupe_store(self) -> Path:
        return self.dedupe_path or self.state_dir / f"dedupe-{self.group_id}"


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
