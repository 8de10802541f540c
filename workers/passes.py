"""One model's share of a micro-batch, the same for every model the caption core calls (the captioner, OCR).

Per model: answers come from its own dedupe (the content key of each image, under the model's own key
prefix, and only for the version serving now), identical images of the batch share one request, each
request takes one token of the model's own budget (an upload with any image over budget is deferred whole,
never published in part), and the rest go out in one call. A batch-wide failure that is not the service
being down is retried one image at a time, so one image's defect is that upload's DLQ entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mmfeat.errors import RecordError, as_record_error
from mmfeat.triton_contract import Caption
from mmfeat.untrusted import clean

log = logging.getLogger("mmfeat.worker")


@dataclass(frozen=True)
class CaptionResult:
    """A model's answer for one image (for OCR, the text read, in ``caption.text``) and the version that gave it."""

    caption: Caption
    captioner_version: str


class CaptionCache(Protocol):
    """Content key -> answer of a model version (workers/gate.py's DedupeStore; a dict in unit tests)."""

    def has(self, key: str) -> bool: ...

    def get(self, key: str, captioner_version: str | None) -> Caption | None: ...

    def put(self, key: str, captioner_version: str, caption: Caption) -> None: ...

    def close(self) -> None: ...


class Budget(Protocol):
    def try_take(self, n: float = 1.0) -> bool: ...


@dataclass
class Frame:
    """One image a model sees for an upload: the image itself, or one sampled frame of a video."""

    t_s: float | None  # seconds into the video; None for a still image
    media: bytes
    key: str  # content key: the dedupe store's and the batch's grouping key
    results: dict[str, CaptionResult] = field(default_factory=dict)  # model name -> its answer
    hits: dict[str, bool] = field(default_factory=dict)  # model name -> answered without a request


@dataclass
class ModelPass:
    name: str
    call: Callable[[list[bytes]], list[CaptionResult | RecordError]]  # raises InfraError when the service is down
    probe_version: Callable[[], str]
    cache: CaptionCache
    budget: Budget | None = None
    prefix: str = ""  # this model's answers are cached under prefix + content key
    on_call: Callable[[float, int], None] | None = None  # (seconds, images) of each call, for metrics
    version: str | None = None  # learned from answers, or from one probe before a cached answer is trusted

    def trust_cache(self, frames: Sequence[Frame]) -> None:
        """Probe the serving version once, before the first cached answer is used (it is only good for that version)."""
        if self.version is None and any(self.cache.has(self.prefix + f.key) for f in frames):
            self.version = self.probe_version()

    def lookup(self, frames: Sequence[Frame]) -> None:
        """Cached answers for one upload's frames (the caller guards it: a failure is that upload's)."""
        for f in frames:
            cached = self.cache.get(self.prefix + f.key, self.version)
            if cached is not None and self.version is not None:
                f.results[self.name], f.hits[self.name] = CaptionResult(cached, self.version), True

    def run(self, uploads: Sequence[tuple[int, Sequence[Frame]]]) -> tuple[set[int], dict[int, RecordError]]:
        """Answer every frame still without one; returns the uploads deferred (by id) and those rejected, with why."""
        groups: dict[str, list[Frame]] = {}
        owner: dict[int, int] = {}
        for upload, frames in uploads:
            for f in frames:
                if self.name not in f.results:
                    groups.setdefault(f.key, []).append(f)
                    owner[id(f)] = upload
        allowed = [k for k in groups if self.budget is None or self.budget.try_take()]
        deferred = {owner[id(f)] for k in groups.keys() - set(allowed) for f in groups[k]}
        rejected: dict[int, RecordError] = {}
        for key, res in zip(allowed, self._call_all([groups[k][0].media for k in allowed]), strict=True):
            group = groups[key]
            if isinstance(res, CaptionResult):
                self.version = res.captioner_version
                self.cache.put(self.prefix + key, res.captioner_version, res.caption)
                for n, f in enumerate(group):
                    f.results[self.name], f.hits[self.name] = res, n > 0
            else:
                rejected.update((owner[id(f)], res) for f in group)
        return deferred, rejected

    def _call_all(self, items: list[bytes]) -> list[CaptionResult | RecordError]:
        if not items:
            return []
        began = time.monotonic()
        try:
            results = self.call(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name} answered {len(results)} results for {len(items)} requests")
        except Exception as e:
            as_record_error(e)  # re-raises InfraError (the service is down: pause and retry the batch)
            log.warning("%s call failed for a batch of %d (%s): calling one at a time", self.name, len(items), clean(e, 200))
            results = []
            for item in items:
                try:
                    results.extend(self.call([item]))
                except Exception as one:
                    results.append(as_record_error(one))
        if self.on_call is not None:
            self.on_call(time.monotonic() - began, len(items))
        return results
