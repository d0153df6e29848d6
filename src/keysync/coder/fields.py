"""Every field Coder sends is checked before keysync uses it: ids go into request paths, names
and prefixes into plans, pull-request comments and terminals."""

from __future__ import annotations

import re
from collections.abc import Sequence

from keysync import errors as e
from keysync.keys import LiveKey
from keysync.names import name_problem
from keysync.secret import redact_secret_like

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A key is 43 characters of [0-9A-Za-z]; one early version sent `cgw_` and 39 of them.
_KEY = re.compile(r"[0-9A-Za-z]{43}|cgw_[0-9A-Za-z]{39}")
_PREFIX = re.compile(r"[0-9A-Za-z]{11}|cgw_[0-9A-Za-z]{7}")


def shown(value: str) -> str:
    """A server's value quoted for a message: short, secret-like runs masked, control
    characters escaped by repr, so nothing it holds can drive a terminal or forge a line."""
    return repr(redact_secret_like(value[:80]) + ("..." if len(value) > 80 else ""))


def is_key_id(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def check_key_id(key_id: str, doing: str) -> str:
    """The id, if it is a UUID; anything else never reaches a request path."""
    if not is_key_id(key_id):
        raise e.MalformedResponseError(f"{doing}: refusing key id {shown(key_id)}, which is not a UUID")
    return key_id


def listed_key_problem(key: LiveKey) -> str | None:
    """Why a listed key cannot be trusted, or None."""
    if name_problem(key.name) is not None:
        return f"a name that is not a valid key name ({shown(key.name)})"
    if not is_key_id(key.id):
        return f"an id that is not a UUID ({shown(key.id)})"
    if _PREFIX.fullmatch(key.key_prefix) is None:
        return f"a key_prefix that is not 11 characters of [0-9A-Za-z] ({shown(key.key_prefix)})"
    times = (key.created_at, key.last_used_at, key.last_heartbeat_at)
    if any(t is not None and t.utcoffset() is None for t in times):
        return "a time without a time zone"
    return None


def check_listed(keys: Sequence[LiveKey], path: str) -> None:
    """Raises one line naming the first listed key that cannot be trusted."""
    for position, key in enumerate(keys, start=1):
        problem = listed_key_problem(key)
        if problem is not None:
            who = f"key {key.name!r}" if name_problem(key.name) is None else f"the {_nth(position)} key"
            raise e.MalformedResponseError(f"GET {path}: coderd listed {who} with {problem}")


def created_key_problem(key: str, key_prefix: str) -> str | None:
    if _KEY.fullmatch(key) is None:
        return "a key that is not 43 characters of [0-9A-Za-z]"
    if key_prefix != key[:11]:
        return "a key_prefix that is not the key's first 11 characters"
    return None


def _nth(position: int) -> str:
    suffix = "th" if 10 <= position % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(position % 10, "th")
    return f"{position}{suffix}"
