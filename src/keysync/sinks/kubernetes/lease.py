"""The sink's lock as a coordination.k8s.io/v1 Lease."""

from __future__ import annotations

import hashlib


def lease_name(coderd_url: str, secret_template: str) -> str:
    """keysync- and a short hash: one lock per Coder deployment and Secret naming."""
    digest = hashlib.sha256(f"{coderd_url}\n{secret_template}".encode()).hexdigest()[:10]
    return f"keysync-{digest}"
