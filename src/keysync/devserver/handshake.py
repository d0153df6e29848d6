"""What `/api/v2/ai-gateway/serve` checks before it upgrades: the protocol version, then the upgrade.

The version rules are Coder's `apiversion` package; the upgrade rules are coder/websocket's
`Accept`. A request it refuses gets 400 and Coder's JSON `Failed to accept websocket connection.`,
whose detail carries Accept's reason, as coderd-api.md documents the endpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from keysync.devserver import messages
from keysync.devserver.exchange import Request, Response, json_response
from keysync.devserver.gojson import go_quote

SERVER_API_VERSION = (1, 0)
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = 1 << 63
_UPGRADE_HEADERS = {"Connection": "Upgrade", "Upgrade": "websocket"}


def server_version() -> str:
    return "{}.{}".format(*SERVER_API_VERSION)


def version_problem(sent: str) -> str | None:
    """Why `sent` (MAJOR.MINOR) is not served here, in apiversion's words; None when it is."""
    parts = sent.split(".")
    if len(parts) != 2:
        return f"invalid version string: {sent}"
    major, minor = (_go_atoi(part) for part in parts)
    if major is None:
        return f"invalid major version: {sent}"
    if minor is None:
        return f"invalid minor version: {sent}"
    ours_major, ours_minor = SERVER_API_VERSION
    if major > ours_major:
        return f"server is at version {server_version()}, behind requested major version {sent}"
    if major == ours_major:
        if minor > ours_minor:
            return f"server is at version {server_version()}, behind requested minor version {sent}"
        return None
    return f"version {sent} is no longer supported"


def upgrade_refusal(request: Request) -> Response | None:
    """The answer to a request that is not a WebSocket handshake Coder would accept; None if it is."""
    refused = _client_problem(request) or _origin_problem(request)
    if refused is None:
        return None
    error, headers = refused
    return json_response(400, messages.websocket_refused(error), headers)


def _client_problem(request: Request) -> tuple[str, dict[str, str]] | None:
    if request.protocol != "HTTP/1.1":
        violation = f"handshake request must be at least HTTP/1.1: {go_quote(request.protocol)}"
        return f"WebSocket protocol violation: {violation}", {}
    for name, token in (("Connection", "Upgrade"), ("Upgrade", "websocket")):
        if not _has_token(request, name, token):
            quoted = go_quote(request.header(name))
            error = f"WebSocket protocol violation: {name} header {quoted} does not contain {token}"
            return error, dict(_UPGRADE_HEADERS)
    version = request.header("Sec-WebSocket-Version")
    if version != "13":
        error = f"unsupported WebSocket protocol version (only 13 is supported): {go_quote(version)}"
        return error, {"Sec-WebSocket-Version": "13"}
    return _key_problem(request.header_values("Sec-WebSocket-Key"))


def _key_problem(keys: tuple[str, ...]) -> tuple[str, dict[str, str]] | None:
    if not keys:
        return "WebSocket protocol violation: missing Sec-WebSocket-Key", {}
    if len(keys) > 1:
        return "WebSocket protocol violation: multiple Sec-WebSocket-Key headers", {}
    key = keys[0].strip()
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        error = f"invalid Sec-WebSocket-Key {go_quote(key)}, must be a 16 byte base64 encoded string"
        return f"WebSocket protocol violation: {error}", {}
    return None


def _origin_problem(request: Request) -> tuple[str, dict[str, str]] | None:
    origin = request.header("Origin")
    if not origin:
        return None
    host = urlsplit(origin).netloc
    if host.lower() == request.header("Host").lower():
        return None
    if not host:
        return f"request Origin {go_quote(origin)} is not a valid URL with a host", {}
    return (
        f"request Origin {go_quote(host)} is not authorized for Host {go_quote(request.header('Host'))}",
        {},
    )


def _has_token(request: Request, name: str, token: str) -> bool:
    values = request.header_values(name)
    return any(part.strip().lower() == token.lower() for value in values for part in value.split(","))


def _go_atoi(text: str) -> int | None:
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if -_INT64 <= value < _INT64 else None
