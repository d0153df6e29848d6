"""Which of the emulated endpoints a path names, for the configured API generation."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keysync.devserver.config import COLLECTION_PATHS

SERVE_PATH = "/api/v2/ai-gateway/serve"
LEGACY_PROXY_PREFIX = "/api/v2/aibridge/"


class Endpoint(enum.Enum):
    COLLECTION = enum.auto()
    ITEM = enum.auto()
    SERVE = enum.auto()
    # On the newest servers everything under /api/v2/aibridge/ goes to the AI Bridge proxy.
    LEGACY_PROXY = enum.auto()

    @property
    def methods(self) -> frozenset[str]:
        return _METHODS[self]


_METHODS = {
    Endpoint.COLLECTION: frozenset({"GET", "POST"}),
    Endpoint.ITEM: frozenset({"DELETE"}),
    Endpoint.SERVE: frozenset({"GET"}),
    Endpoint.LEGACY_PROXY: frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}),
}


@dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    item: str = ""


def resolve(path: str, api: str) -> Route | None:
    """The route for `path` (no query string), or None for "Route not found."."""
    collection = COLLECTION_PATHS[api]
    if path == SERVE_PATH:
        return Route(Endpoint.SERVE)
    if path == collection:
        return Route(Endpoint.COLLECTION)
    item = path.removeprefix(collection + "/")
    if item != path and item and "/" not in item:
        return Route(Endpoint.ITEM, item)
    if api == "ai-gateway-keys" and path.startswith(LEGACY_PROXY_PREFIX):
        return Route(Endpoint.LEGACY_PROXY)
    return None
