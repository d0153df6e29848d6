"""UUID parsing with the rules and error texts of github.com/google/uuid, which Coder uses."""

from __future__ import annotations

import json
import string

_HEX_PAIRS = (0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34)
_URN = "urn:uuid:"


def parse_uuid(text: str) -> str:
    """The canonical lower-case form of `text`, or ValueError with Go's message."""
    length = len(text.encode("utf-8"))
    if length == 32:
        return _canonical(_require_hex(text))
    if length == 36 + len(_URN):
        if text[: len(_URN)].lower() != _URN:
            # Go's %q: a double-quoted string; json.dumps agrees on the printable cases.
            raise ValueError(f"invalid urn prefix: {json.dumps(text[: len(_URN)])}")
        text = text[len(_URN) :]
    elif length == 38:
        # google/uuid drops the first and last character without looking at them.
        text = text[1:-1]
    elif length != 36:
        raise ValueError(f"invalid UUID length: {length}")
    return _canonical(_dashed_hex(text))


def _dashed_hex(text: str) -> str:
    if len(text) != 36 or any(text[i] != "-" for i in (8, 13, 18, 23)):
        raise ValueError("invalid UUID format")
    return _require_hex("".join(text[i : i + 2] for i in _HEX_PAIRS))


def _require_hex(digits: str) -> str:
    if len(digits) != 32 or any(c not in string.hexdigits for c in digits):
        raise ValueError("invalid UUID format")
    return digits.lower()


def _canonical(digits: str) -> str:
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
