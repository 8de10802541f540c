"""Hostile text made printable: one record, one line, no terminal control, always encodable."""

import logging

from hypothesis import given
from hypothesis import strategies as st

from mmfeat.errors import RecordRef
from mmfeat.untrusted import clean, install_log_escaping, is_clean


def test_control_bidi_and_surrogates_are_escaped() -> None:
    assert clean("a\nb") == "a\\x0ab"
    assert clean("\x1b[2J\x1b]0;pwned\x07") == "\\x1b[2J\\x1b]0;pwned\\x07"
    assert clean("file\u202egnp.exe") == "file\\u202egnp.exe"
    assert clean("x\ud800y") == "x\\ud800y"
    assert clean("caf\u00e9 ok") == "caf\u00e9 ok"  # printable non-ASCII stays as it is


def test_long_text_is_cut_with_its_length() -> None:
    assert clean("x" * 500, 10) == "x" * 10 + "...(+490 chars)"


@given(st.text())
def test_cleaned_text_is_one_encodable_line(text: str) -> None:
    out = clean(text)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and is_clean(out)
    out.encode("utf-8")  # never a lone surrogate


def test_a_record_ref_escapes_the_item_id() -> None:
    assert str(RecordRef("media.uploads", 0, 7, "a\nFORGED")) == "media.uploads[0]@7 item=a\\x0aFORGED"


def test_mmfeat_log_messages_are_escaped_once_formatted(caplog: object) -> None:
    install_log_escaping()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("mmfeat.test")
    log.addHandler(handler)
    try:
        log.warning("DLQ %s: %s", "item\n2026-01-01 INFO forged", "\x1b[31mred")
        logging.getLogger("other").warning("not ours\n")
    finally:
        log.removeHandler(handler)
    assert records[0].getMessage() == "DLQ item\\x0a2026-01-01 INFO forged: \\x1b[31mred"
