"""The profile lookup's bearer-token check: a new HTTP input, so a property over any header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.app import bearer_ok

TOKEN = "s3cret-token"


def test_exactly_the_bearer_token_passes() -> None:
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"bearer {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN} ", f"Basic {TOKEN}", "Bearer s3cret"):
        assert not bearer_ok(header, TOKEN), header


@given(st.one_of(st.none(), st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_any_other_header_is_refused_without_an_error(header: str | None) -> None:
    assert bearer_ok(header, TOKEN) is (header == f"Bearer {TOKEN}")
    assert bearer_ok(header if header is None else "Bearer " + header, TOKEN) is (header == TOKEN)
