"""Fixed one-minute windows of requests per caller and path, like Coder's API rate limit."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Quota:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float

    def headers(self, now: float) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(int(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - now)))
        return headers


class RateLimiter:
    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._window = 0
        self._counts: dict[str, int] = {}

    def now(self) -> float:
        return self._clock()

    def hit(self, key: str) -> Quota:
        """Count one request for `key` in the current window."""
        window = int(self.now() // WINDOW_SECONDS)
        with self._lock:
            if window != self._window:
                # Windows are aligned for every key, so the old counts can all go at once.
                self._window, self._counts = window, {}
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        reset_at = float((window + 1) * WINDOW_SECONDS)
        return Quota(count <= self.limit, self.limit, max(0, self.limit - count), reset_at)

    def fresh(self) -> Quota:
        """What a caller who bypasses the limit is told: a window of its own, one request in."""
        window = int(self.now() // WINDOW_SECONDS)
        return Quota(True, self.limit, self.limit - 1, float((window + 1) * WINDOW_SECONDS))
