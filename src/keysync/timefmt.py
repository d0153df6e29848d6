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
    span = _span(int((now - moment).total_seconds()))
    return f"{span} ago" if span else "just now"


def ahead(moment: datetime, now: datetime) -> str:
    """'in 7 minutes', or 'now' once the moment has come."""
    span = _span(int((moment - now).total_seconds()))
    return f"in {span}" if span else "now"


def _span(seconds: int) -> str:
    """'3 days' (the largest whole unit), or '' under a second."""
    for size, unit in _STEPS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return ""


def age(moment: datetime, now: datetime) -> str:
    return relative(moment, now).removesuffix(" ago")
