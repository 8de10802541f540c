"""The caption worker's pure core: a micro-batch of consumed records in, exactly one outcome per record out.

No Kafka here. The loop (workers/worker.py) consumes, calls ``CaptionCore.run``, produces each outcome's
record, and commits after delivery; the backfill drives the same core with parts of its own.

Every per-record step (unwrap, parse, validate, fetch, the media kind's prepare, cache lookups, build,
encode) runs inside one boundary, ``_guarded``: any exception about one record becomes that record's DLQ
outcome (``internal_error`` with the exception class when nothing more specific applies). Only
infrastructure errors (``InfraError``: Triton unavailable, the local store broken) leave ``run``; the loop
pauses or stops on those. The models (the captioner, then OCR and ASR where configured) each take their
share of the batch through one ``ModelPass`` (workers/passes.py): their own dedupe, budget and call, and a
batch-wide failure that is not Triton being down retried one item at a time, so that one record's defect
is that record's DLQ entry, not the batch's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Protocol, TypeVar

from mmfeat.dlq import dead_letter
from mmfeat.errors import InfraError, RecordError, RecordRef, as_record_error
from mmfeat.features import FeatureBuilder, encode_feature, lineage_headers
from mmfeat.kafka.client import Headers, OutRecord
from mmfeat.media.prepared import Prepared
from mmfeat.schemas import (
    H_DEDUPE,
    H_FEATURED_AT,
    H_REASON,
    H_SOURCE,
    TEXT_ONLY,
    DeferredRecordV1,
    Upload,
    encode_record,
    now_utc,
    parse_upload,
    peek_item_id,
)
from workers.passes import Budget, CaptionCache, CaptionResult, Frame, ModelPass

CAPTIONER, OCR, ASR = "captioner", "ocr", "asr"  # the models a batch passes through, by the names their answers are kept under

log = logging.getLogger("mmfeat.worker")
T = TypeVar("T")


@dataclass(frozen=True)
class Incoming:
    """One consumed record, as the core sees it: where it came from and its raw bytes."""

    ref: RecordRef
    key: bytes | None
    value: bytes | None


class Kind(StrEnum):
    FEATURE = "feature"
    DEFERRED = "deferred"
    DLQ = "dlq"


@dataclass(frozen=True)
class Outcome:
    """What became of one upload: the record to produce, and why (DLQ and deferred reasons)."""

    kind: Kind
    ref: RecordRef
    record: OutRecord
    reason: str | None = None
    dedupe_hit: bool = False


class Captioner(Protocol):
    """What the core needs of the captioner (workers/triton_client.py on Triton; a fake in unit tests)."""

    def caption_many(self, items: Sequence[tuple[bytes, str]]) -> list[CaptionResult | RecordError]:
        """One result per (media, prompt), in order; raises CaptionerUnavailable when the service is down."""
        ...

    def probe_version(self) -> str: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


class TextReader(Protocol):
    """What the core needs of a model that reads text out of media: OCR on images, ASR on sound
    (workers/triton_client.py's TritonOcr and TritonAsr)."""

    def read_many(self, items: Sequence[bytes]) -> list[CaptionResult | RecordError]:
        """One result per item, in order (the text in ``caption.text``); raises InfraError when the service is down."""
        ...

    def probe_version(self) -> str: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Topics:
    features: str
    deferred: str
    dlq: str


@dataclass
class Parts:
    """Everything the core calls out to, injected: the live worker and a backfill differ only here."""

    captioner: Captioner
    cache: CaptionCache
    builder: FeatureBuilder
    fetch: Callable[[Upload], bytes]
    # the images the captioner and OCR see (with their time in a video; None: a still image) and the sound the
    # ASR model hears; refuses what the media kind cannot take (raises MediaRejected)
    prepare: Callable[[Upload, bytes], Prepared]
    content_key: Callable[[bytes], str]
    topics: Topics
    budget: Budget | None = None  # None: never defer (a backfill paces itself instead)
    prompt: str = ""
    max_record_bytes: int = 16 * 1024 * 1024
    unwrap: Callable[[bytes], bytes] = lambda raw: raw  # the upload a consumed value carries
    ocr: TextReader | None = None  # None: no on-screen text source
    ocr_budget: Budget | None = None
    asr: TextReader | None = None  # None: no speech source
    asr_budget: Budget | None = None


@dataclass
class _Work:
    """One admitted upload on its way to an outcome."""

    inc: Incoming
    ref: RecordRef
    raw: bytes  # the upload's JSON
    upload: Upload
    key: str  # content key of the whole upload (the record's content_sha256)
    frames: list[Frame]  # none for a post of words alone, or a sound
    audio: list[Frame] = field(default_factory=list)  # the sound track (one), for the ASR model

    @property
    def dedupe_hit(self) -> bool:
        return bool(self.frames) and all(f.hits.get(CAPTIONER, False) for f in self.frames)


@dataclass
class Stats:
    features: int = 0
    deferred: int = 0
    dlq: int = 0
    dedupe_hits: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        return self.features + self.deferred + self.dlq

    def count(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            if o.kind is Kind.FEATURE:
                self.features += 1
                self.dedupe_hits += o.dedupe_hit
            elif o.kind is Kind.DEFERRED:
                self.deferred += 1
            else:
                self.dlq += 1
                self.dlq_reasons[o.reason or "?"] = self.dlq_reasons.get(o.reason or "?", 0) + 1


class CaptionCore:
    def __init__(self, parts: Parts, on_call: Callable[[float, int], None] | None = None) -> None:
        self.p = parts
        captioner, prompt = parts.captioner, parts.prompt
        # on_call: (seconds, images) of each captioner call, for metrics
        self.passes = [
            ModelPass(CAPTIONER, lambda items: captioner.caption_many([(m, prompt) for m in items]), captioner.probe_version,
                      parts.cache, parts.budget, on_call=on_call),
        ]  # fmt: skip
        if parts.ocr is not None:
            self.passes.append(ModelPass(OCR, parts.ocr.read_many, parts.ocr.probe_version, parts.cache, parts.ocr_budget, prefix="ocr:"))
        if parts.asr is not None:  # it hears each upload's sound track (_Work.audio), not its pictures
            self.passes.append(ModelPass(ASR, parts.asr.read_many, parts.asr.probe_version, parts.cache, parts.asr_budget, prefix="asr:"))

    @property
    def captioner_version(self) -> str | None:
        return self.passes[0].version

    # ---- the boundary -------------------------------------------------------------------------

    def dlq(self, inc: Incoming, ref: RecordRef, err: RecordError) -> Outcome:
        """The DLQ outcome of a record (mmfeat.dlq: it cannot fail itself)."""
        letter = dead_letter(ref, err, inc.key, inc.value)
        headers: Headers = list(letter.headers)
        return Outcome(Kind.DLQ, ref, OutRecord(self.p.topics.dlq, inc.key, letter.value, headers), reason=letter.reason)

    def _guarded(self, inc: Incoming, ref: RecordRef, step: Callable[[], T]) -> T | Outcome:
        try:
            return step()
        except Exception as e:  # the boundary: InfraError is re-raised by as_record_error, the rest is this record's
            return self.dlq(inc, ref, as_record_error(e))

    # ---- steps ----------------------------------------------------------------------------------

    def _admit(self, inc: Incoming) -> _Work:
        if inc.value is None:
            raise RecordError("record has no value (tombstone)", reason="schema")
        if len(inc.value) > self.p.max_record_bytes:
            raise RecordError(f"record is {len(inc.value)} bytes, over the {self.p.max_record_bytes}-byte limit", reason="record_too_large")
        raw = self.p.unwrap(inc.value)
        upload = parse_upload(raw)
        ref = RecordRef(inc.ref.topic, inc.ref.partition, inc.ref.offset, upload.item_id)
        if upload.media_type == TEXT_ONLY:
            return _Work(inc, ref, raw, upload, self.p.content_key(upload.post_text().encode()), [])
        media = self.p.fetch(upload)
        prepared = self.p.prepare(upload, media)  # refuses bombs before Triton
        frames = [Frame(t, m, self.p.content_key(m)) for t, m in prepared.images]
        audio = [Frame(None, prepared.audio, self.p.content_key(prepared.audio))] if prepared.audio else []
        return _Work(inc, ref, raw, upload, self.p.content_key(media), frames, audio)

    def _feature(self, w: _Work) -> Outcome:
        results = [f.results[CAPTIONER] for f in w.frames]
        version = results[0].captioner_version if results else None
        read = [(f.t_s, f.results[OCR]) for f in w.frames if OCR in f.results]
        ocr = [(t, r.caption.text) for t, r in read] if read else None
        ocr_version = read[0][1].captioner_version if read else None
        heard = w.audio[0].results.get(ASR) if w.audio else None
        asr, asr_version = (heard.caption.text, heard.captioner_version) if heard else (None, None)
        if w.frames and w.frames[0].t_s is None:  # a still image
            record = self.p.builder.build(
                w.upload, results[0].caption, version, w.key, ocr=ocr, ocr_version=ocr_version, asr=asr, asr_version=asr_version
            )
        else:
            frames = [(f.t_s or 0.0, r.caption) for f, r in zip(w.frames, results, strict=True)]
            record = self.p.builder.build(
                w.upload, None, version, w.key, frames=frames, ocr=ocr, ocr_version=ocr_version, asr=asr, asr_version=asr_version
            )
        headers: Headers = [
            *lineage_headers(record),
            (H_FEATURED_AT, now_utc().isoformat().encode()),
            (H_SOURCE, str(w.ref).encode()),
            (H_DEDUPE, b"hit" if w.dedupe_hit else b"miss"),
        ]
        out = OutRecord(self.p.topics.features, record.item_id, encode_feature(record), headers, record.upload_created_at.timestamp())
        return Outcome(Kind.FEATURE, w.ref, out, dedupe_hit=w.dedupe_hit)

    def _deferred(self, w: _Work, reason: str) -> Outcome:
        rec = DeferredRecordV1(
            item_id=w.upload.item_id, reason=reason, upload_json=w.raw.decode(), source=str(w.ref), deferred_at=now_utc()
        )
        log.info("deferred %s: %s", w.ref, "a model's budget is exhausted" if reason == "budget" else reason.replace("_", " "))
        headers: Headers = [(H_SOURCE, str(w.ref).encode()), (H_REASON, reason.encode())]
        return Outcome(Kind.DEFERRED, w.ref, OutRecord(self.p.topics.deferred, w.upload.item_id, encode_record(rec), headers), reason)

    # ---- one micro-batch ----------------------------------------------------------------------

    def run(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Exactly one outcome per record, in input order. Raises InfraError (the caller pauses or stops)."""
        slots: list[_Work | Outcome] = []
        for inc in batch:
            ref = RecordRef(inc.ref.topic, inc.ref.partition, inc.ref.offset, peek_item_id(inc.value))
            slots.append(self._guarded(inc, ref, partial(self._admit, inc)))
        deferred: dict[int, str] = {}  # upload -> why
        rejected: dict[int, RecordError] = {}
        for model in self.passes:  # captioner, OCR, ASR: an upload one model defers or rejects skips the next
            inputs = (lambda w: w.audio) if model.name == ASR else (lambda w: w.frames)
            model.trust_cache([f for w in slots if isinstance(w, _Work) for f in inputs(w)])
            for i, slot in enumerate(slots):
                if isinstance(slot, _Work) and id(slot) not in deferred and id(slot) not in rejected:
                    got = self._guarded(slot.inc, slot.ref, partial(model.lookup, inputs(slot)))
                    if isinstance(got, Outcome):
                        slots[i] = got
            todo = [(id(w), inputs(w)) for w in slots if isinstance(w, _Work) and id(w) not in deferred and id(w) not in rejected]
            try:
                more_deferred, more_rejected = model.run(todo)
            except InfraError:
                if model.name != ASR:
                    raise  # the captioner or OCR down: every media upload needs it, the loop pauses
                # ASR down: only uploads with sound need it; they wait in the deferred topic, the rest goes on
                more_deferred, more_rejected = {u for u, sound in todo if sound}, {}
                deferred.update((u, "asr_unavailable") for u in more_deferred)
            deferred.update((u, "budget") for u in more_deferred if u not in deferred)
            rejected.update(more_rejected)
        out: list[Outcome] = []
        for slot in slots:
            if isinstance(slot, Outcome):
                out.append(slot)
            elif id(slot) in rejected:
                out.append(self.dlq(slot.inc, slot.ref, rejected[id(slot)]))
            else:
                step = partial(self._deferred, slot, deferred[id(slot)]) if id(slot) in deferred else partial(self._feature, slot)
                out.append(self._guarded(slot.inc, slot.ref, step))
        return out
