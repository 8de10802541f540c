"""One root exception and a few typed causes.

Every error names what it is about (a record as topic[partition]@offset and its item id, a model,
a service) so that a one-line log or a DLQ reason is enough to find and fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmfeat.untrusted import clean


@dataclass(frozen=True)
class RecordRef:
    """Where a record came from, printed as ``topic[partition]@offset item=<id>`` (the id escaped: it may be hostile)."""

    topic: str
    partition: int
    offset: int
    item_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.topic}[{self.partition}]@{self.offset}"
        return f"{where} item={clean(self.item_id, 140)}" if self.item_id else where


class MmfeatError(Exception):
    """Root of every error mmfeat raises on purpose."""


class ConfigError(MmfeatError):
    """Settings are missing, unknown or invalid."""


class InfraError(MmfeatError):
    """The infrastructure failed (broker, Triton, local disk), not a record: the process pauses or stops.

    Every other exception raised while handling one record is that record's fault (see ``as_record_error``).
    """


class ServiceError(InfraError):
    """An embedded service (Kafka broker, Triton server) failed to start, stop or answer."""


class KafkaIOError(InfraError):
    """A produce, consume or commit failed in a way no record is to blame for."""


class KafkaAuthError(KafkaIOError):
    """The cluster refused our credentials or TLS settings: retrying cannot help, so the process stops."""


class StateError(InfraError):
    """A local state store (the dedupe store, a RocksDB table) cannot be read or written."""


class CaptionerUnavailable(InfraError):
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


def as_record_error(e: Exception) -> RecordError:
    """The record boundary: what an exception raised while handling one record means for that record.

    A RecordError is returned as it is; an InfraError is re-raised (no record is to blame); anything else
    is a defect that this record triggered, reported as ``internal_error`` with the exception class, so
    it reaches the DLQ instead of crashing the process (and, after a restart, crashing it again).
    """
    if isinstance(e, RecordError):
        return e
    if isinstance(e, InfraError):
        raise e
    err = RecordError(f"{type(e).__name__}: {clean(e, 500)}", reason="internal_error")
    err.__cause__ = e
    return err
