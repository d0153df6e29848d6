"""The dev server's settings and the facts that differ between API generations."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from pathlib import Path

ALPHANUMERIC = string.ascii_letters + string.digits

# Collection path of each generation; an item path is the collection path plus "/{id}".
COLLECTION_PATHS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}

# The Go request type each generation decodes into; it shows up in decoder errors.
REQUEST_TYPES = {
    "coderd-keys": "CreateAIGatewayCoderdKeyRequest",
    "aibridge-keys": "CreateAIGatewayKeyRequest",
    "ai-gateway-keys": "CreateAIGatewayKeyRequest",
}

# Where each generation's AI Bridge data plane catches every path its static routes do not serve.
CATCH_ALL_PREFIXES = {
    "coderd-keys": ("/api/v2/aibridge",),
    "aibridge-keys": ("/api/v2/aibridge",),
    "ai-gateway-keys": ("/api/v2/aibridge", "/api/v2/ai-gateway"),
}

# The listed field that says when a key was last seen; the newest servers renamed it.
SEEN_FIELDS = ("last_heartbeat_at", "last_used_at")

FEATURE_MESSAGES = {
    "coderd-keys": "AI Bridge is a Premium feature. Contact sales!",
    "aibridge-keys": "AI Bridge is a Premium feature. Contact sales!",
    "ai-gateway-keys": "AI Gateway is a Premium feature. Contact sales!",
}


@dataclass(frozen=True)
class DevServerConfig:
    """Everything `keysync dev-server` can be told; the defaults emulate a healthy server."""

    host: str = "127.0.0.1"
    port: int = 7080
    token: str | None = None
    member_token: str | None = None
    api: str = "ai-gateway-keys"  # what current Coder serves; the CLI's --api default too
    feature_disabled: bool = False
    state: Path | None = None
    latency_ms: int = 0
    fail_rate: float = 0.0
    lose_response_rate: float = 0.0
    rate_limit: int = 0
    rate_window: float = 60.0  # seconds
    heartbeat_interval: float = 60.0  # seconds
    # None: the generation's own (last_heartbeat_at on ai-gateway-keys, else last_used_at).
    last_seen_field: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid dev server settings: " + "; ".join(problems))

    @property
    def seen_field(self) -> str:
        if self.last_seen_field is not None:
            return self.last_seen_field
        return "last_heartbeat_at" if self.api == "ai-gateway-keys" else "last_used_at"


def _problems(config: DevServerConfig) -> list[str]:
    checks = [
        (config.api in COLLECTION_PATHS, f"api must be one of {', '.join(COLLECTION_PATHS)}"),
        (0 <= config.port <= 65535, "port must be between 0 and 65535"),
        (config.latency_ms >= 0, "latency_ms must not be negative"),
        (0.0 <= config.fail_rate <= 1.0, "fail_rate must be between 0 and 1"),
        (0.0 <= config.lose_response_rate <= 1.0, "lose_response_rate must be between 0 and 1"),
        (config.rate_limit >= 0, "rate_limit must not be negative"),
        (config.rate_window > 0, "rate_window must be positive"),
        (config.heartbeat_interval > 0, "heartbeat_interval must be positive"),
        (
            config.last_seen_field in (None, *SEEN_FIELDS),
            f"last_seen_field must be one of {', '.join(SEEN_FIELDS)}",
        ),
        (
            config.last_seen_field != "last_heartbeat_at" or config.api == "ai-gateway-keys",
            "last_seen_field last_heartbeat_at exists only on ai-gateway-keys servers",
        ),
        (config.token != "", "token must not be empty"),
        (config.member_token != "", "member_token must not be empty"),
        (
            config.member_token is None or config.member_token != config.token,
            "member_token must differ from token",
        ),
    ]
    return [message for ok, message in checks if not ok]


def generate_token() -> str:
    """A session token in Coder's shape, `<10 alnum id>-<22 alnum secret>`.

    Always from `secrets`, even with a seed: a reproducible token would be a guessable one.
    """
    first = "".join(secrets.choice(ALPHANUMERIC) for _ in range(10))
    second = "".join(secrets.choice(ALPHANUMERIC) for _ in range(22))
    return f"{first}-{second}"
