"""Times for people ("3 days ago") and for machines (RFC 3339)."""

from __future__ import annotations

from datetime import UTC, datetime

_STEPS = (
    (86400 * 365, "year"),
    (86400 * 30, "month"),
    (86400 * 7, "week"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
    (1, "second"),
)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 1:
        return "just now"
    for size, unit in _STEPS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def age(moment: datetime, now: datetime) -> str:
    return relative(moment, now).removesuffix(" ago")
