"""A dead letter: the DLQ value and headers of a record that could not become an output, built in one place for
the caption worker, the backfill and the profiles app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mmfeat.errors import RecordError, RecordRef
from mmfeat.schemas import H_REASON, H_SOURCE, dlq_record
from mmfeat.untrusted import clean

log = logging.getLogger("mmfeat.dlq")


@dataclass(frozen=True)
class DeadLetter:
    value: bytes  # a DlqRecordV1
    headers: list[tuple[str, bytes]]
    reason: str


def dead_letter(ref: RecordRef, err: RecordError, raw_key: bytes | None, raw_value: bytes | None) -> DeadLetter:
    """Why, where from, and the raw bytes; logged as one escaped line. Built from what is known for sure, so it cannot fail."""
    if err.reason == "internal_error" and err.__cause__ is not None:  # a defect of ours: its traceback, for whoever fixes it
        log.debug("internal error on %s", ref, exc_info=err.__cause__)
    reason = clean(err.reason, 64)
    log.warning("DLQ %s: %s: %s", ref, reason, clean(err, 500))
    value = dlq_record(ref, err, raw_key, raw_value).model_dump_json().encode()
    return DeadLetter(value, [(H_SOURCE, str(ref).encode()), (H_REASON, reason.encode())], err.reason)
