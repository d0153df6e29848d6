"""The public API for sink plugins: what `keysync.sinks.base` declares, and that it is enough."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import keysync.sinks.base as api

README = Path(__file__).resolve().parents[2] / "README.md"
PUBLIC = {
    "LockHeldError",
    "Secret",
    "SecretRecord",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkRefusedError",
    "SinkView",
    "StoredEntry",
}
SINK_METHODS = {"describe", "read", "check_writable", "store", "remove", "lock", "local_paths", "close"}


def test_the_declared_names_are_the_public_api() -> None:
    assert set(api.__all__) == PUBLIC
    assert api.__all__ == sorted(api.__all__)


def test_every_declared_name_is_keysync_s_own() -> None:
    for name in api.__all__:
        member = getattr(api, name)
        assert inspect.isclass(member), name
        assert member.__module__.startswith("keysync."), (name, member.__module__)


def test_sink_errors_are_one_family() -> None:
    assert issubclass(api.SinkRefusedError, api.SinkError)
    assert issubclass(api.LockHeldError, api.SinkError)


def test_the_protocol_has_the_documented_methods() -> None:
    declared = {name for name in vars(api.Sink) if not name.startswith("_")}
    assert declared >= SINK_METHODS


def test_the_readme_plugin_example_imports_only_the_public_api() -> None:
    block = re.search(r"```python\n(# pyproject.toml: .*?)```", README.read_text(), re.S)
    assert block is not None, "the README's plugin example is gone"
    imported = [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(block.group(1)))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keysync")
        for alias in node.names
    ]
    assert imported, "the example imports nothing of keysync's"
    for module, name in imported:
        assert module in {"keysync.sinks.base", "keysync.keys", "keysync.errors"}, module
        assert name in PUBLIC, name
