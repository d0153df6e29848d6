"""The import paths of the modules that moved into the layer folders, working for one release.

`import keysync.sinkconfig` still gives the module now at `keysync.manifest.sinks`, with a
DeprecationWarning that names the new path. Only `keysync.cli` and `keysync.manifest`, which
are packages now, cannot be aliased; `keysync.manifest` answers the old names itself.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

MOVED = {
    "keysync.apply": "keysync.engine.applier",
    "keysync.audit": "keysync.engine.audit",
    "keysync.client": "keysync.coder.client",
    "keysync.commands": "keysync.cli.commands",
    "keysync.console": "keysync.cli.console",
    "keysync.entry": "keysync.cli.entry",
    "keysync.execution": "keysync.engine.execution",
    "keysync.gitcheck": "keysync.engine.gitcheck",
    "keysync.manifest_loader": "keysync.manifest.load",
    "keysync.metrics": "keysync.engine.metrics",
    "keysync.retry": "keysync.coder.retry",
    "keysync.roothelp": "keysync.cli.roothelp",
    "keysync.schema": "keysync.manifest.schema",
    "keysync.session": "keysync.engine.session",
    "keysync.sinkconfig": "keysync.manifest.sinks",
    "keysync.watch": "keysync.engine.watch",
    "keysync.wire": "keysync.coder.wire",
    "keysync.yamlsource": "keysync.manifest.yamlsource",
}


def warn_moved(old: str, new: str) -> None:
    message = f"{old} has moved to {new}; the old import path goes away in the next release"
    warnings.warn(message, DeprecationWarning, stacklevel=3)


def new_name(fullname: str) -> str | None:
    head, _, tail = fullname.partition(".commands.")
    if tail and head == "keysync":
        return f"keysync.cli.commands.{tail}"
    return MOVED.get(fullname)


class _Alias:
    # importlib.abc's base classes would add tens of milliseconds to every start.
    def __init__(self, target: str) -> None:
        self.target = target
        self.own_spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warn_moved(spec.name, self.target)
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module ran at its new path already; the import system gave it the old path's
        # spec, so it gets its own back (reprs, pickling and reloads use it).
        module.__spec__ = self.own_spec


class MovedFinder:
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        new = new_name(fullname)
        return None if new is None else ModuleSpec(fullname, cast("Loader", _Alias(new)))


def install() -> None:
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())  # before the path finder, which would load a copy
