"""Coder's API rate limit: go-chi/httprate's sliding window, counted per caller and path.

Windows start at multiples of the window length (Go's `Time.Truncate`, counted from Go's zero
time, year 1 UTC). A request is admitted while `round(prev * (window - elapsed) / window + curr)`
plus one stays within the limit, `prev` and `curr` being the previous and the current window's
counts; so the budget comes back gradually, not all at once when a window turns over.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

NANOSECONDS = 1_000_000_000
# Seconds from Go's zero time (0001-01-01T00:00:00Z) to the Unix epoch.
_GO_ZERO_TO_UNIX = 62_135_596_800


@dataclass(frozen=True)
class Quota:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # Unix time at which the current window ends
    retry_after: int  # the window's length in whole seconds, as httprate sends it

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, limit: int, window: float, clock: Callable[[], int] = time.time_ns) -> None:
        """`window` in seconds; `clock` gives Unix time in nanoseconds."""
        self.limit = limit
        self.window_ns = round(window * NANOSECONDS)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}
        self._oldest_kept = 0

    def hit(self, key: str) -> Quota:
        """Count one request for `key`, unless it is over the limit."""
        now = self._clock()
        current = self._window_start(now)
        with self._lock:
            self._forget_before(current - self.window_ns)
            previous_count = self._counts.get((key, current - self.window_ns), 0)
            current_count = self._counts.get((key, current), 0)
            rate = _go_round(
                previous_count * (self.window_ns - (now - current)) / self.window_ns + current_count
            )
            if rate + 1 > self.limit:
                return self._quota(False, self.limit - rate, current)
            self._counts[(key, current)] = current_count + 1
        return self._quota(True, self.limit - rate - 1, current)

    def fresh(self) -> Quota:
        """What an owner bypassing the limit is told: Coder counts it under a random, new key."""
        return self._quota(True, self.limit - 1, self._window_start(self._clock()))

    def _quota(self, allowed: bool, remaining: int, window_start: int) -> Quota:
        reset_at = (window_start + self.window_ns) // NANOSECONDS
        return Quota(allowed, self.limit, remaining, reset_at, self.window_ns // NANOSECONDS)

    def _window_start(self, now: int) -> int:
        since_go_zero = now + _GO_ZERO_TO_UNIX * NANOSECONDS
        return now - since_go_zero % self.window_ns

    def _forget_before(self, oldest: int) -> None:
        if oldest <= self._oldest_kept:
            return
        self._oldest_kept = oldest
        self._counts = {slot: n for slot, n in self._counts.items() if slot[1] >= oldest}


def _go_round(value: float) -> int:
    """Go's math.Round: halves away from zero (Python's round() goes to even)."""
    whole = math.trunc(value)
    if abs(value - whole) >= 0.5:
        whole += 1 if value > 0 else -1
    return whole


def go_duration(nanoseconds: int) -> str:
    """A duration as Go's time.Duration.String() writes it: 1m0s, 2s, 1.5s, 250ms, 1h0m0s."""
    if nanoseconds == 0:
        return "0s"
    sign, left = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
    if left < NANOSECONDS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if left >= size:
                return sign + _fraction(left, size) + unit
    minutes, rest = divmod(left, 60 * NANOSECONDS)
    text = _fraction(rest, NANOSECONDS) + "s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = (f"{hours}h" if hours else "") + f"{minutes}m" + text
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, part = divmod(value, unit)
    digits = str(part).rjust(len(str(unit)) - 1, "0").rstrip("0") if unit > 1 else ""
    return f"{whole}.{digits}" if digits else str(whole)
