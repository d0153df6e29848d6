"""Durations written as digits and a unit: 90d, 12h, 1w2d."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


@lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    """Parses '90d' or '1w2d'; raises ValueError with the rule otherwise."""
    if not _WHOLE.match(text):
        raise ValueError(
            f"{text!r} is not a duration: use digits and a unit s, m, h, d or w, e.g. 90d or 1w2d"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds == 0:
        raise ValueError(f"{text!r} is zero: a duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse of parse_duration, largest units first."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
