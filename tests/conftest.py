"""Every tier: name resolution is guarded (tests/resolver_guard.py), in this process and in the subprocesses tests start."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests import resolver_guard


@pytest.fixture(autouse=True, scope="session")
def _resolver_guard() -> Iterator[None]:
    real = resolver_guard.socket.getaddrinfo
    resolver_guard.install()
    yield
    resolver_guard.socket.getaddrinfo = real


@pytest.fixture
def refused_lookups() -> Callable[[], list[str]]:
    """Lookups the guard has refused in this process since the test began."""
    start = len(resolver_guard.refused)
    return lambda: resolver_guard.refused[start:]
