"""Text that came from a topic, a URL or a file, made safe to print.

Any string a record carries (an item id, a URI, an error message that quotes them) may hold a newline
that forges a log line, an ANSI escape that clears a terminal or sets its title, a bidi override that
reorders what a reader sees, or a lone surrogate that cannot be encoded at all. ``clean`` escapes all
of those and caps the length, so one record gives one readable line wherever it is shown.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# C0 and C1 controls (ESC, CR, LF, BEL ...), DEL, line/paragraph separators, bidi and zero-width
# format characters, the BOM, and surrogates (valid in a Python str, not encodable as UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def clean(value: object, limit: int = 300) -> str:
    """``str(value)`` with unsafe characters escaped (``\\x1b``, ``\\u202e``) and cut to about ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(text) - limit} chars)"
    return _UNSAFE.sub(_escape, text)


def is_clean(text: str) -> bool:
    """Whether ``text`` has nothing ``clean`` would escape."""
    return _UNSAFE.search(text) is None


_installed = False


def install_log_escaping() -> None:
    """Escape every mmfeat log message once it is formatted: one record, one log line, whatever the record held.

    A log record factory, not a formatter, so it holds under any handler (Faust installs its own)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.name.startswith("mmfeat"):
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: let logging report it as it would
                return record
            record.msg, record.args = clean(message, 4000), ()
        return record

    logging.setLogRecordFactory(factory)
