"""One root exception and a few typed causes.

Every error names what it is about (a record as topic[partition]@offset and its item id, a model,
a service) so that a one-line log or a DLQ reason is enough to find and fix it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecordRef:
    """Where a record came from, printed as ``topic[partition]@offset item=<id>``."""

    topic: str
    partition: int
    offset: int
    item_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.topic}[{self.partition}]@{self.offset}"
        return f"{where} item={self.item_id}" if self.item_id else where


class MmfeatError(Exception):
    """Root of every error mmfeat raises on purpose."""


class ConfigError(MmfeatError):
    """Settings are missing, unknown or invalid."""


class ServiceError(MmfeatError):
    """An embedded service (Kafka broker, Triton server) failed to start, stop or answer."""


class KafkaIOError(MmfeatError):
    """A produce, consume or commit failed in a way no record is to blame for."""


class CaptionerUnavailable(MmfeatError):
    """Triton cannot be reached or is not ready; the worker pauses rather than drops records."""


class RecordError(MmfeatError):
    """A record is bad input. It goes to the DLQ with ``reason`` and the worker moves on.

    ``reason`` is a short stable code (``bad_json``, ``schema``, ``uri_denied`` ...) for counting
    and alerting; the message says what exactly was wrong.
    """

    reason = "bad_record"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class SchemaError(RecordError):
    reason = "schema"


class FetchError(RecordError):
    """The media could not be fetched or was refused before any connection was made."""

    reason = "fetch"


class MediaRejected(RecordError):
    """The media was fetched but is not an acceptable image (too big, a bomb, not an image)."""

    reason = "media"


class CaptionRejected(RecordError):
    """The captioner answered this one request with an error (for example a corrupt image)."""

    reason = "caption"
