"""Run a decoder on hostile bytes in a child process: a wall-clock deadline, an address-space cap, and a
crash (FFmpeg's segfault, the kernel's out-of-memory kill) that is the record's error, not the worker's death.

Children come from a fork server (started once, with the decoders imported), not from forking the
worker itself: the worker runs librdkafka's and gRPC's threads, and forking a threaded process is unsafe.
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
_PRELOAD = ["mmfeat.media.video"]
_lock = threading.Lock()
_ctx: Any = None


def _context() -> Any:
    global _ctx
    with _lock:
        if _ctx is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _ctx = ctx
        return _ctx


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int) -> None:
    cap = _address_space() + memory_mb * 1024 * 1024  # what the decoder may add to what the fork server mapped
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        result: tuple[str, Any] = ("ok", fn(*args))
    except RecordError as e:
        result = ("rejected", (str(e), e.reason))
    except MemoryError:
        result = ("rejected", (f"decoding needed more than {memory_mb} MB", "media_too_large"))
    except Exception as e:  # any other failure of the decoder is this record's, with its class
        result = ("rejected", (f"decoder failed ({type(e).__name__}: {e})", "corrupt_media"))
    try:
        conn.send_bytes(pickle.dumps(result))
    except MemoryError:
        conn.send_bytes(pickle.dumps(("rejected", (f"decoding needed more than {memory_mb} MB", "media_too_large"))))
    conn.close()


def run(fn: Callable[..., T], args: tuple[Any, ...], *, timeout_s: float, memory_mb: int, what: str) -> T:
    """``fn(*args)`` in a sandboxed child; its RecordError comes back as MediaRejected with the same reason.

    A child past ``timeout_s`` is killed (``decode_timeout``); one that dies without answering is
    ``decoder_crashed`` with its signal. ``fn`` must be a module-level function (it is pickled by name)."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, memory_mb), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise MediaRejected(f"{what} ran past its {timeout_s:g} s deadline and was stopped", reason="decode_timeout")
        try:
            status, value = pickle.loads(parent.recv_bytes())
        except EOFError:
            proc.join(5)
            raise MediaRejected(f"{what} process died (exit code {proc.exitcode})", reason="decoder_crashed") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if status == "ok":
        return value
    message, reason = value
    raise MediaRejected(message, reason=reason)
