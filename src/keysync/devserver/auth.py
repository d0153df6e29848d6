"""Who is calling: the owner, the member, or nobody the server knows, and why not (Coder's words)."""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from keysync.devserver import messages
from keysync.devserver.exchange import Request

SESSION_COOKIE = "coder_session_token"
_ID_LENGTH = 10
_SECRET_LENGTH = 22


class Principal(enum.Enum):
    OWNER = "owner"
    MEMBER = "member"
    INVALID = "invalid"
    MISSING = "missing"

    @property
    def is_user(self) -> bool:
        return self in (Principal.OWNER, Principal.MEMBER)


@dataclass(frozen=True)
class Identity:
    principal: Principal
    refusal: str = ""  # the 401's detail when the principal is not a user


class Tokens:
    def __init__(self, owner: str, member: str | None) -> None:
        self._owner = owner
        self._member = member

    def identify(self, request: Request) -> Identity:
        token = presented_token(request)
        if not token:
            return Identity(Principal.MISSING, messages.NO_TOKEN_DETAIL)
        if _same(token, self._owner):
            return Identity(Principal.OWNER)
        if self._member is not None and _same(token, self._member):
            return Identity(Principal.MEMBER)
        return Identity(Principal.INVALID, self._refusal(token))

    def knows(self, token: str) -> bool:
        return _same(token, self._owner) or (self._member is not None and _same(token, self._member))

    def _refusal(self, token: str) -> str:
        """Coder's detail for a token it does not accept: its shape first, then its id."""
        parts = token.split("-")
        if len(parts) != 2:
            return f"Invalid API key format: incorrect amount of API key parts, expected 2 got {len(parts)}"
        key_id, secret = (len(part.encode("utf-8")) for part in parts)
        if key_id != _ID_LENGTH:
            return f"Invalid API key format: invalid API key ID length, expected 10 got {key_id}"
        if secret != _SECRET_LENGTH:
            return f"Invalid API key format: invalid API key secret length, expected 22 got {secret}"
        known_ids = {known.split("-")[0] for known in (self._owner, self._member) if known}
        if parts[0] in known_ids:
            return messages.WRONG_SECRET_DETAIL
        return messages.INVALID_TOKEN_DETAIL


def presented_token(request: Request) -> str:
    """The session token where Coder looks for it, in its order: the cookie, the query parameter,
    `Coder-Session-Token`, `Authorization: Bearer`, then the `access_token` query parameter."""
    bearer = request.header("Authorization")
    candidates = (
        _cookie(request.header("Cookie")),
        request.query_value(SESSION_COOKIE),
        request.header("Coder-Session-Token").strip(),
        bearer[7:].strip() if bearer.lower().startswith("bearer ") else "",
        request.query_value("access_token").strip(),
    )
    return next((token for token in candidates if token), "")


def _cookie(header: str) -> str:
    if SESSION_COOKIE not in header:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return ""
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else ""


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
