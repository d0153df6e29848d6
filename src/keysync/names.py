"""The server's rule for key names, and Kubernetes' for the names of its objects."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
MAX_NAME_LENGTH = 64
_NAME = re.compile(NAME_PATTERN)
_KUBERNETES_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def name_problem(name: str) -> str | None:
    """Why Coder would refuse this key name, or None when it is valid."""
    if len(name) > MAX_NAME_LENGTH:
        return f"{name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):  # fullmatch: `$` alone would let a trailing newline through
        return (
            f"{name!r} is not a valid key name: lowercase letters, digits and single hyphens, "
            "not at either end"
        )
    return None


def kubernetes_name(name: str) -> bool:
    """Whether Kubernetes takes `name` for a Secret: a DNS-1123 (RFC 1123) subdomain."""
    return len(name) <= 253 and _KUBERNETES_NAME.fullmatch(name) is not None
