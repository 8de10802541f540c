"""The gate's two decisions, with no Kafka in them: has this content been captioned already
(dedupe by content hash, in a RocksDB store via rocksdict), and may we spend a captioner call
on it now (a token-bucket budget whose overflow is deferred, never dropped)?
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rocksdict import Rdict

from mmfeat.errors import StateError
from mmfeat.triton_contract import Caption


def content_key(media: bytes, prompt: str) -> str:
    """Dedupe key: the same bytes with the same prompt get the same caption."""
    h = hashlib.sha256(media)
    if prompt:
        h.update(b"\0prompt\0" + prompt.encode())
    return h.hexdigest()


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``try_take`` never blocks."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._tokens = float(burst)
        self._last = clock()

    def try_take(self, n: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False


@dataclass(frozen=True)
class CachedCaption:
    captioner_version: str
    caption: Caption


class DedupeStore:
    """content key -> the caption a given captioner version produced for it.

    A store that cannot be read or written is a StateError (the disk, not a record, is at fault); an entry
    that does not parse is a miss (captioned again and overwritten)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(path))
        except Exception as e:  # rocksdict raises plain Exceptions (a lock held by another process, a corrupt store)
            raise StateError(f"cannot open the dedupe store {path}: {e}") from e
        self.path = path

    @classmethod
    def first_free(cls, path: Path, slots: int = 64) -> DedupeStore:
        """The store at ``path``, or, while another process holds it, at ``path-2``, ``path-3``, ...: RocksDB lets one
        process open a store, so each worker on a host takes a slot of its own. A slot outlives its worker and the next
        worker to start reuses it (captions are keyed by content and captioner version, so any slot is right for any
        worker; a second slot only starts colder)."""
        for k in range(1, slots + 1):
            slot = path if k == 1 else path.with_name(f"{path.name}-{k}")
            try:
                return cls(slot)
            except StateError as e:
                if not _held(e):
                    raise
        raise StateError(f"all {slots} dedupe store slots at {path} are held by running processes")

    def has(self, key: str) -> bool:
        try:
            return key in self._db
        except Exception as e:
            raise StateError(f"dedupe store {self.path}: {e}") from e

    def get(self, key: str, captioner_version: str | None) -> Caption | None:
        """A cached caption, only if it came from ``captioner_version`` (the one serving now)."""
        if captioner_version is None:
            return None
        try:
            raw = self._db.get(key)
        except Exception as e:
            raise StateError(f"dedupe store {self.path}: {e}") from e
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            if entry["v"] != captioner_version:
                return None
            # an entry from before embeddings has no "emb": a miss, so the record made from it is a fresh call's
            embedding = base64.b64decode(entry["emb"], validate=True)
            return Caption(text=str(entry["text"]), token_ids=[int(i) for i in entry["ids"]], embedding=embedding)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None

    def put(self, key: str, captioner_version: str, caption: Caption) -> None:
        try:
            emb = base64.b64encode(caption.embedding).decode()
            entry = {"v": captioner_version, "text": caption.text, "ids": caption.token_ids, "emb": emb}
            self._db[key] = json.dumps(entry)
        except Exception as e:
            raise StateError(f"dedupe store {self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()


def _held(e: StateError) -> bool:
    """Whether opening failed on the store's lock (another process has it), not on the disk or the data."""
    text = str(e.__cause__ or e)
    return "LOCK" in text and ("temporarily unavailable" in text or "No locks available" in text or "lock hold" in text)
