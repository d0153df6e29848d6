"""The manifest: its model, the sink settings, the YAML loader, loading and the JSON Schema."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # `from keysync.manifest import Manifest` predates this package: it works for one release.
    from keysync.manifest import model
    from keysync.moved import warn_moved

    if name.startswith("__") or not hasattr(model, name):
        raise AttributeError(f"module 'keysync.manifest' has no attribute {name!r}")
    warn_moved(f"keysync.manifest.{name}", f"keysync.manifest.model.{name}")
    return getattr(model, name)
