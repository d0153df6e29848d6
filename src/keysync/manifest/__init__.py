"""The manifest: its model, the sink settings, the YAML loader, loading and the JSON Schema."""

from __future__ import annotations

from typing import Any

_SUBMODULES = {"model", "load", "sinks", "yamlsource", "schema"}


def __getattr__(name: str) -> Any:
    # `from keysync.manifest import Manifest` predates this package: it works for one release.
    # importlib, not `from keysync.manifest import model`: that asks this hook for `model` again
    # while the submodule is still unimported, recursing until the stack runs out.
    import importlib

    from keysync.moved import warn_moved

    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module 'keysync.manifest' has no attribute {name!r}")
    model = importlib.import_module("keysync.manifest.model")
    if not hasattr(model, name):
        raise AttributeError(f"module 'keysync.manifest' has no attribute {name!r}")
    warn_moved(f"keysync.manifest.{name}", f"keysync.manifest.model.{name}")
    return getattr(model, name)
