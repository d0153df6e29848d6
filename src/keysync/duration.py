"""Durations written as digits and a unit: 90d, 12h, 1w2d."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"^(?:\d+[smhdw])+\Z")
_PART = re.compile(r"(\d+)([smhdw])")
MAX_DURATION = timedelta(days=36525)  # 100 years: beyond it a typo, and beyond timedelta soon after
_MAX_DIGITS = 12  # more digits than any duration within 100 years has, in any unit


@lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    """Parses '90d' or '1w2d'; raises ValueError with the rule otherwise."""
    if not _WHOLE.match(text):
        raise ValueError(
            f"{text!r} is not a duration: use digits and a unit s, m, h, d or w, e.g. 90d or 1w2d"
        )
    parts = _PART.findall(text)
    if any(len(number.lstrip("0")) > _MAX_DIGITS for number, _ in parts):
        raise ValueError(f"{_short(text)} is more than 100 years: a duration is at most 100 years")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in parts)
    if seconds == 0:
        raise ValueError(f"{text!r} is zero: a duration must be positive")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{_short(text)} is more than 100 years: a duration is at most 100 years")
    return timedelta(seconds=seconds)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
