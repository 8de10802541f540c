"""Name resolution guarded for every test: only loopback names and IP literals are ever looked up.

A regression that lets a hostile upload steer a lookup (say, of ``name.invalid`` through a URI's userinfo)
is caught here and never leaves the machine: the lookup is refused and recorded. tests/conftest.py installs
the guard in the test process; tests/guard/sitecustomize.py in every Python subprocess the tests start,
which append what they refused to the file named by ``TEST_RESOLVER_GUARD_LOG``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

LOG_ENV = "TEST_RESOLVER_GUARD_LOG"
ALLOWED_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
refused: list[str] = []
_real = socket.getaddrinfo


def _allowed(host: Any) -> bool:
    if host is None:
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.lower() in ALLOWED_NAMES:
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        return False


def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _allowed(host):
        refused.append(str(host))
        path = os.environ.get(LOG_ENV)
        if path:
            with open(path, "a") as f:
                f.write(f"{host!r}\n")
        raise socket.gaierror(socket.EAI_NONAME, f"test resolver guard: lookup of {host!r} refused")
    return _real(host, *args, **kwargs)


def install() -> None:
    socket.getaddrinfo = guarded_getaddrinfo
