"""The AI Bridge data plane behind Coder's catch-all routes, as far as a stray request sees it.

It reads its own credential, never `Coder-Session-Token`: without one it answers 400 in plain
text. With a session token it knows it would proxy to an AI provider, which has no such path.
"""

from __future__ import annotations

from keysync.devserver import messages
from keysync.devserver.auth import Tokens
from keysync.devserver.exchange import Request, Response, text_response


def catch_all(request: Request, tokens: Tokens) -> Response:
    credential = _credential(request)
    if not credential:
        return text_response(400, messages.NO_AUTH_KEY)
    if not tokens.knows(credential):
        return text_response(403, messages.UNAUTHORIZED)
    return text_response(404, messages.PAGE_NOT_FOUND)


def _credential(request: Request) -> str:
    bearer = request.header("Authorization")
    candidates = (
        request.header("X-Coder-Token"),
        bearer[7:] if bearer.lower().startswith("bearer ") else "",
        request.header("X-Api-Key"),
    )
    return next((value.strip() for value in candidates if value.strip()), "")
