"""When to try a request again, and how long to wait first. Pure: no I/O, no clock."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

UNKNOWN_OUTCOME_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2
    cap: float = 5.0
    attempts: int = 6
    rate_limit_budget: float = 180.0
    rate_limit_attempts: int = 20  # 429s one request may meet, however short the waits

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: a random wait up to base * 2**attempt, capped."""
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))


def rate_limit_floor(limited: int) -> float:
    """The least wait after the `limited`-th 429 in a row, whatever the server says: a broken
    limiter must not get a storm of immediate retries."""
    return min(1.0, 0.05 * 2.0**limited)


MAX_HINT = 3600.0  # a Retry-After or X-RateLimit-Reset further away than this is not believed


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait after a 429, from Retry-After or X-RateLimit-Reset, or None when neither
    gives a usable value: a negative, zero, absurd or unreadable hint is no hint (it must not
    turn into a storm of immediate retries)."""
    retry_after = headers.get("retry-after")
    if retry_after:
        seconds = _seconds_from_retry_after(retry_after, now)
        if seconds is not None:
            return seconds
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            return _usable(float(reset) - now)
        except ValueError:
            return None
    return None


def _seconds_from_retry_after(value: str, now: float) -> float | None:
    try:
        return _usable(float(value))
    except ValueError:
        pass
    try:
        return _usable(parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _usable(seconds: float) -> float | None:
    return seconds if 0 < seconds <= MAX_HINT else None
