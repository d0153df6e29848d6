"""Who is calling: the owner, the member, or nobody the server knows."""

from __future__ import annotations

import enum
import hmac

from keysync.devserver.exchange import Request


class Principal(enum.Enum):
    OWNER = "owner"
    MEMBER = "member"
    INVALID = "invalid"
    MISSING = "missing"

    @property
    def is_user(self) -> bool:
        return self in (Principal.OWNER, Principal.MEMBER)


class Tokens:
    def __init__(self, owner: str, member: str | None) -> None:
        self._owner = owner
        self._member = member

    def identify(self, request: Request) -> Principal:
        token = presented_token(request)
        if not token:
            return Principal.MISSING
        if _same(token, self._owner):
            return Principal.OWNER
        if self._member is not None and _same(token, self._member):
            return Principal.MEMBER
        return Principal.INVALID


def presented_token(request: Request) -> str:
    """The session token from `Coder-Session-Token`, else from `Authorization: Bearer`."""
    token = request.header("Coder-Session-Token").strip()
    if token:
        return token
    scheme, _, credentials = request.header("Authorization").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
