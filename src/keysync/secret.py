"""A value that must never be printed: Coder keys, session tokens, Vault tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

_MASK: Final = "**********"
# A Coder session token, or a long random-looking run like a gateway key.
_SECRET_LIKE = re.compile(
    r"[A-Za-z0-9]{10}-[A-Za-z0-9]{22}|(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{24,}"
)


class Secret:
    """Holds a secret string; its str, repr and format all show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


_WINDOW = 12  # one more than a key prefix, which Coder itself shows


def mask(text: str, secrets: list[Secret]) -> str:
    """Masks every run of text that is a piece of one of the secrets at least 12 characters long."""
    covered = [False] * len(text)
    for secret in secrets:
        value = secret.reveal()
        if not value:
            continue
        width = min(_WINDOW, len(value))
        pieces = {value[i : i + width] for i in range(len(value) - width + 1)}
        for start in range(len(text) - width + 1):
            if text[start : start + width] in pieces:
                covered[start : start + width] = [True] * width
    return _replace_covered(text, covered)


def _replace_covered(text: str, covered: list[bool]) -> str:
    parts: list[str] = []
    index = 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            parts.append(_MASK)
        else:
            parts.append(text[index])
            index += 1
    return "".join(parts)


def header_safe(value: str) -> bool:
    """Whether a token can go into an HTTP header as it is: printable ASCII, no spaces. Checked
    when a token is read, so that no HTTP library gets to quote a bad one in an error."""
    return all("!" <= char <= "~" for char in value)


def looks_secret(text: str) -> bool:
    return _SECRET_LIKE.search(text) is not None


def redact_secret_like(text: str) -> str:
    """Masks anything in text that looks like a token or a key, for messages about user input."""
    return _SECRET_LIKE.sub(_MASK, text)


MAX_SECRET_FILE_BYTES = 64 << 10  # tokens are short; a larger file is not one (or never ends)


def read_secret_file(path: Path) -> str:
    """The stripped text of a token file; OSError or ValueError (UnicodeDecodeError is one) when
    it cannot be read, is not UTF-8 or is larger than any token: /dev/zero must not hang keysync."""
    with path.open("rb") as file:
        data = file.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"larger than {MAX_SECRET_FILE_BYTES >> 10} KiB, so not a token")
    return data.decode("utf-8").strip()
