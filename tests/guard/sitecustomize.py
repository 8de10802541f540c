"""Loaded by every Python subprocess the tests start (tests put this folder on PYTHONPATH): the resolver guard."""

from tests.resolver_guard import install

install()
