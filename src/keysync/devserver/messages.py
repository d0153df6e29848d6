"""Coder's error bodies, verbatim (coderd-api.md); one place so that a typo cannot hide."""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
NO_TOKEN_DETAIL = 'Cookie "coder_session_token" or query parameter must be provided.'
INVALID_TOKEN_DETAIL = "API key is invalid."
WRONG_SECRET_DETAIL = "API key secret is invalid."
NAME_FORMAT_DETAIL = (
    "Must be 64 characters or fewer, lowercase letters, numbers, and non-consecutive hyphens, "
    "cannot start or end with a hyphen."
)
FORBIDDEN_DETAIL = (
    "You don't have permission to view this content. If you believe this is a mistake, "
    "please contact your administrator or try signing in with different credentials."
)

ROUTE_NOT_FOUND: Body = {"message": "Route not found."}
METHOD_NOT_ALLOWED: Body = {"message": "Method not allowed."}
FORBIDDEN: Body = {"message": "Forbidden.", "detail": FORBIDDEN_DETAIL}
RESOURCE_NOT_FOUND: Body = {"message": "Resource not found or you do not have access to this resource"}
NAME_REQUIRED: Body = {
    "message": "Validation failed.",
    "validations": [{"field": "name", "detail": 'Validation failed for tag "required" with value: ""'}],
}
INVALID_NAME: Body = {
    "message": "Invalid key name.",
    "validations": [{"field": "name", "detail": NAME_FORMAT_DETAIL}],
}
NAME_TAKEN: Body = {
    "message": "Key name must be unique.",
    "validations": [{"field": "name", "detail": "A key with this name already exists."}],
}
GATEWAY_KEY_REQUIRED: Body = {"message": "AI Gateway key required."}
GATEWAY_KEY_INVALID: Body = {"message": "AI Gateway key invalid."}
# The newest generation's own 500s, which carry no detail.
LIST_FAILED: Body = {"message": "Failed to list keys."}
CREATE_FAILED: Body = {"message": "Failed to create key. Please retry."}
DELETE_FAILED: Body = {"message": "Failed to delete key."}

# Plain text, as Go's http.Error writes it.
BYPASS_REFUSED = '"X-Coder-Bypass-Ratelimit" provided but user is not owner'
NO_AUTH_KEY = "no authentication key provided"
UNAUTHORIZED = "unauthorized"
PAGE_NOT_FOUND = "404 page not found"

INVALID_TOKEN_CHALLENGE = (
    'Bearer realm="coder", error="invalid_token", error_description="The access token is invalid", '
    "resource_metadata={metadata}"
)


def signed_out(detail: str) -> Body:
    return {"message": SIGNED_OUT, "detail": detail}


def invalid_json(detail: str) -> Body:
    return {"message": "Request body must be valid JSON.", "detail": detail}


def invalid_key_id(detail: str) -> Body:
    return {"message": "Invalid key ID.", "detail": detail}


def internal_error(detail: str) -> Body:
    return {"message": "An internal server error occurred.", "detail": detail}


def rate_limited(limit: int, window: str) -> Body:
    return {"message": f"You've been rate limited for sending more than {limit} requests in {window}."}


def incompatible_version(why: str, sent: str, ours: str) -> Body:
    return {
        "message": "Incompatible or unparsable version",
        "validations": [
            {"field": "version", "detail": why},
            {"field": "client_api_version", "detail": sent},
            {"field": "server_api_version", "detail": ours},
        ],
    }


def websocket_refused(error: str) -> Body:
    return {
        "message": "Failed to accept websocket connection.",
        "detail": f"failed to accept WebSocket connection: {error}",
    }


def feature_disabled(message: str) -> Body:
    return {"message": message}
