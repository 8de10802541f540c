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
