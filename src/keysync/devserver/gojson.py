"""JSON as Go's encoding/json writes and reads it, so bodies and decoder errors look like Coder's."""

from __future__ import annotations

import json
import string
from datetime import datetime
from typing import Any

# Go's encoder escapes these even inside strings (SetEscapeHTML, and JavaScript line separators).
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
}
_GO_WHITESPACE = " \t\r\n"


class DecodeError(ValueError):
    """The body is not what Go would decode; the message is Go's `err.Error()`."""


class _Object(list[tuple[str, Any]]):
    """A JSON object kept as its key/value pairs, in order and with duplicates, as Go sees it."""


def encode(value: object) -> bytes:
    """Compact JSON with a trailing newline, like Go's json.Encoder."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.translate(_GO_ESCAPES) + "\n").encode("utf-8", errors="replace")


def format_time(moment: datetime) -> str:
    """RFC 3339 with trailing zeros of the fraction trimmed, like Go's time.Time in JSON."""
    text = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    whole, _, rest = text.partition(".")
    fraction, zone = rest[:6].rstrip("0"), rest[6:]
    return f"{whole}.{fraction}{zone}" if fraction else f"{whole}{zone}"


def decode_name(body: bytes, type_name: str) -> str:
    """The `name` Go would decode from `body` into `type_name`; "" when absent or null."""
    text = body.decode("utf-8", errors="replace").lstrip(_GO_WHITESPACE)
    if not text:
        raise DecodeError("EOF")
    value = _parse(text)
    if isinstance(value, _Object):
        return _name_field(value, type_name)
    if value is None:
        return ""
    raise DecodeError(f"json: cannot unmarshal {_kind(value)} into Go value of type codersdk.{type_name}")


def _parse(text: str) -> Any:
    decoder = json.JSONDecoder(object_pairs_hook=_Object, parse_constant=_reject_constant)
    try:
        # Like Go's Decoder.Decode: the first value counts, whatever follows it does not.
        return decoder.raw_decode(text)[0]
    except json.JSONDecodeError as exc:
        raise DecodeError(_syntax_error(exc.msg, text, exc.pos)) from None


def _reject_constant(name: str) -> Any:
    # Python accepts NaN and Infinity; Go does not.
    if name.startswith("-"):
        raise DecodeError(f"invalid character {quote_char(name[1])} in numeric literal")
    raise DecodeError(f"invalid character {quote_char(name[0])} looking for beginning of value")


def _name_field(pairs: _Object, type_name: str) -> str:
    # Go matches field names case-insensitively; later duplicates win; null leaves the field
    # alone; a value of the wrong type fails the decode after it has read the rest.
    name, wrong_kind = "", None
    for key, value in pairs:
        if key.lower() != "name" or value is None:
            continue
        if isinstance(value, str):
            name = value
        elif wrong_kind is None:
            wrong_kind = _kind(value)
    if wrong_kind is not None:
        raise DecodeError(
            f"json: cannot unmarshal {wrong_kind} into Go struct field {type_name}.name of type string"
        )
    return name


def _kind(value: object) -> str:
    if isinstance(value, _Object):
        return "object"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def _syntax_error(msg: str, text: str, pos: int) -> str:
    if pos >= len(text) or msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = quote_char(text[pos])
    if msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {char} after object key"
    if msg.startswith("Expecting ','"):
        where = "object key:value pair" if _innermost(text, pos) == "{" else "array element"
        return f"invalid character {char} after {where}"
    if msg.startswith("Invalid control character"):
        return f"invalid character {char} in string literal"
    if msg.startswith("Invalid \\u"):
        return _unicode_escape_error(text, pos)
    if msg.startswith("Invalid \\escape"):
        return f"invalid character {quote_char(text[pos + 1])} in string escape code"
    return f"invalid character {char} looking for beginning of value"


def _unicode_escape_error(text: str, pos: int) -> str:
    # Python points at the "u"; Go names the first character that is not a hex digit.
    digits = text[pos + 1 : pos + 5]
    bad = next((c for c in digits if c not in string.hexdigits), None)
    if bad is None:
        return "unexpected EOF"
    return f"invalid character {quote_char(bad)} in \\u hexadecimal character escape"


def _innermost(text: str, pos: int) -> str:
    """The kind of container ('{' or '[') open at `pos`, skipping strings."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            in_string, escaped = (char != '"' or escaped), (char == "\\" and not escaped)
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def quote_char(char: str) -> str:
    """A character quoted as Go's JSON scanner quotes it in error messages."""
    if char == '"':
        return "'\"'"
    if char in _QUOTE_ESCAPES:
        return f"'{_QUOTE_ESCAPES[char]}'"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"'\\x{ord(char):02x}'"
    return f"'{char}'"


def go_quote(text: str) -> str:
    """A string quoted as Go's %q (strconv.Quote) quotes it, for the printable cases and escapes."""
    out = []
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "'":
            out.append("'")
        elif char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return f'"{"".join(out)}"'
