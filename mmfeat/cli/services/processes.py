"""Processes the embedded services run as: ports, start-up waits, and stopping a whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mmfeat.errors import ServiceError

Log = Callable[[str], object]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports. The sockets stay bound until all are picked: two ``free_port()`` calls in a row may
    return the same port, and a broker whose listener and controller got one port fails its storage format."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    return free_ports(1)[0]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise ServiceError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise ServiceError(f"{what} exited with code {proc.returncode} during start-up; {log}: {' | '.join(tail)}")
        time.sleep(0.5)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f}s; see {log}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _runs(pid: int, *markers: str) -> bool:
    """Whether ``pid`` is still a process we started (pids are reused): its command line names a marker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return any(m in cmdline for m in markers)


TRITON_MARKERS = ("tritonserver", "triton_python_backend_stub")
KAFKA_MARKERS = ("kafka.Kafka",)


def group_members(pgid: int, markers: Sequence[str]) -> list[int]:
    """Live processes of process group ``pgid`` whose command line names one of ``markers``.

    A group outlives its leader: after a kill -9 of tritonserver its Python backend stub (about 1 GiB) runs on
    in the group. Linux does not hand out a pid that is still some group's id, and the marker check keeps an
    unrelated group that later got the same id safe."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z" and _runs(int(stat.parent.name), *markers):
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def stop_group(pgid: int, markers: Sequence[str], timeout_s: float = 20.0, log: Log = print, name: str = "") -> bool:
    """Stop every process of the group we started (the leader gracefully first, then what is left, SIGKILL last).
    Returns whether there was anything to stop."""
    members = group_members(pgid, markers)
    if not members:
        return False
    log(f"{name or 'group'}: stopping pid {pgid} and its process group ({len(members)} process(es))")
    if pgid in members:
        _signal_wait([pgid], signal.SIGTERM, timeout_s)
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        left = group_members(pgid, markers)
        if not left:
            break
        _signal_wait(left, sig, wait_s)
    return True


def _signal_wait(pids: Sequence[int], sig: int, timeout_s: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL whatever is left after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)
