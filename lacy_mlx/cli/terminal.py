"""Making untrusted text safe to print on a terminal (not a command).

Document text, titles and model output can hold escape sequences (clear the screen, set the window
title, rewrite what is shown) or bidirectional overrides that reorder what the reader sees. Human
output shows them as visible escapes instead; ``--json`` output is left exact.
"""
from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidi marks/overrides/isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object) -> str:
    """``text`` with every control character that could act on a terminal written as ``\\xNN`` / ``\\uNNNN``.

    Tabs and newlines are kept. Lone surrogates (undecodable input) are shown as ``\\udcNN`` too,
    so printing never fails on them.
    """
    s = _UNSAFE.sub(_visible, str(text))
    if any("\ud800" <= c <= "\udfff" for c in s):
        s = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in s)
    return s
