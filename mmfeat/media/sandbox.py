"""Run a decoder on hostile bytes in a child process: a wall-clock deadline, an address-space cap, and a
crash (FFmpeg's segfault, the kernel's out-of-memory kill) that is the record's error, not the worker's death.

Children come from a fork server (started once, with the decoders imported), not from forking the worker
itself: the worker runs librdkafka's and gRPC's threads, and forking a threaded process is unsafe. A child
is kept for the next decode (a fork per video cost more than the decode itself), and replaced when it
runs past a deadline, dies, or has served ``MAX_JOBS`` decodes (so a leak in a decoder cannot build up).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import resource
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from mmfeat.errors import MediaRejected, RecordError

T = TypeVar("T")
_PRELOAD = ["mmfeat.media.video", "mmfeat.media.audio"]
MAX_JOBS = 200
_lock = threading.Lock()
_ctx: Any = None


def _context() -> Any:
    global _ctx
    if _ctx is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _ctx = ctx
    return _ctx


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _too_big(memory_mb: int) -> tuple[str, Any]:
    return ("rejected", (f"decoding needed more than {memory_mb} MB", "media_too_large"))


def _serve(conn: Connection, memory_mb: int) -> None:
    """The child: the cap once, then one job per message until the parent closes the pipe."""
    cap = _address_space() + memory_mb * 1024 * 1024  # what a decoder may add to what the fork server mapped
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    while True:
        try:
            fn, args = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            result: tuple[str, Any] = ("ok", fn(*args))
        except RecordError as e:
            result = ("rejected", (str(e), e.reason))
        except MemoryError:
            result = _too_big(memory_mb)
        except Exception as e:  # any other failure of the decoder is this record's, with its class
            result = ("rejected", (f"decoder failed ({type(e).__name__}: {e})", "corrupt_media"))
        try:
            conn.send_bytes(pickle.dumps(result))
        except MemoryError:
            conn.send_bytes(pickle.dumps(_too_big(memory_mb)))


class _Child:
    def __init__(self, memory_mb: int) -> None:
        ctx = _context()
        self.conn, theirs = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(theirs, memory_mb), daemon=True)
        self.proc.start()
        theirs.close()
        self.jobs = 0

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


_children: dict[int, _Child] = {}  # memory cap -> its kept child


def run(fn: Callable[..., T], args: tuple[Any, ...], *, timeout_s: float, memory_mb: int, what: str) -> T:
    """``fn(*args)`` in a sandboxed child; its RecordError comes back as MediaRejected with the same reason.

    A child past ``timeout_s`` is killed (``decode_timeout``); one that dies without answering is
    ``decoder_crashed`` with its exit code. ``fn`` must be a module-level function (it is pickled by name).
    Calls are serialized per memory cap: one decode at a time per worker process."""
    with _lock:
        child = _children.get(memory_mb)
        if child is None or not child.proc.is_alive() or child.jobs >= MAX_JOBS:
            if child is not None:
                child.stop()
            child = _children[memory_mb] = _Child(memory_mb)
        child.jobs += 1
        try:
            child.conn.send_bytes(pickle.dumps((fn, args)))
            if not child.conn.poll(timeout_s):
                raise MediaRejected(f"{what} ran past its {timeout_s:g} s deadline and was stopped", reason="decode_timeout")
            status, value = pickle.loads(child.conn.recv_bytes())
        except (EOFError, BrokenPipeError, ConnectionResetError):
            child.proc.join(5)
            raise MediaRejected(f"{what} process died (exit code {child.proc.exitcode})", reason="decoder_crashed") from None
        except BaseException:
            child.stop()
            _children.pop(memory_mb, None)
            raise
    if status == "ok":
        return value
    message, reason = value
    raise MediaRejected(message, reason=reason)
