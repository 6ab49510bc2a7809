"""Text shown to a person: what a terminal would act on is written out instead.

Class names, file names and library messages can hold control characters (an ANSI escape that
recolours or clears the screen, a bell, a carriage return that hides a line), bidirectional
overrides that reorder what is seen, and undecodable bytes of a file name (Python keeps them as lone
surrogates, which a UTF-8 stream refuses). Each is shown as its escape (``\\x1b``, ``\\xe9``), so a
line is exactly one line and says what is there.
"""

from __future__ import annotations

import json
import re

# C0 controls (tab and newline too: one message, one line), DEL, C1 controls, bidi overrides and
# isolates, and the lone surrogates that stand for undecodable bytes
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# in JSON: the same less C0 (json.dumps escapes those already)
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:   # a byte that is not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as its escape."""
    return _UNSAFE.sub(_escape, text)


def json_line(obj) -> str:
    """``obj`` as one line of JSON that is safe on a terminal: non-ASCII text kept as it is, but
    controls, bidi overrides and undecodable file-name bytes as ``\\uXXXX`` escapes (which
    ``json.loads`` turns back into the same string, so a path still names its file)."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False))
