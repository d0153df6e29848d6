"""Which of the emulated endpoints a path names, for the configured API generation, as chi routes it.

Coder mounts each keys collection and the gateway's serve endpoint with chi's `Route`, so the
mount point answers with or without a trailing slash and anything deeper that its own routes do
not match is "Route not found.". Static routes win over the AI Bridge catch-alls (`/*`), which take
every other path below their mount point, the mount point itself included.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keysync.devserver.config import CATCH_ALL_PREFIXES, COLLECTION_PATHS

API_PREFIX = "/api/v2"
SERVE_PATH = "/api/v2/ai-gateway/serve"


class Endpoint(enum.Enum):
    COLLECTION = enum.auto()
    ITEM = enum.auto()
    SERVE = enum.auto()
    CATCH_ALL = enum.auto()  # the AI Bridge data plane, a proxy to AI providers

    @property
    def methods(self) -> frozenset[str]:
        return _METHODS[self]


_METHODS = {
    Endpoint.COLLECTION: frozenset({"GET", "POST"}),
    Endpoint.ITEM: frozenset({"DELETE"}),
    Endpoint.SERVE: frozenset({"GET"}),
    Endpoint.CATCH_ALL: frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}),
}


@dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    item: str = ""


def under_api(path: str) -> bool:
    """Is this path below /api/v2, where Coder's rate limit runs before any routing?"""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def resolve(path: str, api: str) -> Route | None:
    """The route for `path` (no query string), or None for "Route not found."."""
    for mount, endpoint in ((SERVE_PATH, Endpoint.SERVE), (COLLECTION_PATHS[api], Endpoint.COLLECTION)):
        if path in (mount, mount + "/"):
            return Route(endpoint)
        if path.startswith(mount + "/"):
            return _below(path.removeprefix(mount + "/"), endpoint)
    if any(path == prefix or path.startswith(prefix + "/") for prefix in CATCH_ALL_PREFIXES[api]):
        return Route(Endpoint.CATCH_ALL)
    return None


def _below(rest: str, mount: Endpoint) -> Route | None:
    # The only route below a mount point is the collection's "/{id}".
    if mount is Endpoint.COLLECTION and "/" not in rest:
        return Route(Endpoint.ITEM, rest)
    return None
