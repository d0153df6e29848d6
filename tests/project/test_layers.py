"""Guard: the folders are layers, and every import points inward.

core (the modules at the top of `keysync/`) and `manifest/` are the pure domain; `transport/`
bounds HTTP exchanges and knows nothing of keysync; `coder/` and `sinks/` are adapters that may
use the domain and the transport but not each other; `engine/` composes them;
`cli/` is the outermost ring. `devserver/` stands alone: it emulates Coder and shares no code
with the client, so that the two cannot agree on a mistake.

The tests keep a rule of their own: no test module imports another; what they share lives in
helper modules at the tests root, beside conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = TESTS.parent / "src" / "keysync"

MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core", "manifest"},
    "manifest": {"core", "manifest"},
    "transport": {"transport"},
    "coder": {"core", "transport", "coder"},
    "sinks": {"core", "manifest", "transport", "sinks"},
    "engine": {"core", "manifest", "transport", "coder", "sinks", "engine"},
    "cli": {"core", "manifest", "transport", "coder", "sinks", "engine", "cli", "devserver"},
    "devserver": {"devserver"},
}
# (importer, imported) pairs allowed across the rule, each with its reason.
EXCEPTIONS = {
    # `python -m keysync` is the entry point, not part of the core.
    ("keysync.__main__", "keysync.cli.entry"),
    # A plugin sink's settings model is found through the plugin registry while loading.
    ("keysync.manifest.load", "keysync.sinks.registry"),
}
FOLDERS = set(MAY_IMPORT) - {"core"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keysync":
                found.update(f"keysync.{alias.name}" for alias in node.names)
            elif node.module.startswith("keysync."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("keysync."))
    return found


def crossings() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        allowed = MAY_IMPORT[layer_of(importer)]
        for imported in sorted(imported_modules(path)):
            if layer_of(imported) not in allowed and (importer, imported) not in EXCEPTIONS:
                wrong.append(f"{importer} imports {imported}")
    return wrong


def test_every_import_points_inward() -> None:
    assert crossings() == []


def test_the_listed_exceptions_still_exist() -> None:
    # An exception that no longer happens must leave the list, so the list stays honest.
    stale = [
        pair
        for pair in EXCEPTIONS
        if pair[1] not in imported_modules(PACKAGE.parent / (pair[0].replace(".", "/") + ".py"))
    ]
    assert stale == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("keysync.plan", "core"),
        ("keysync.keys", "core"),
        ("keysync.manifest.model", "manifest"),
        ("keysync.sinks.vault", "sinks"),
        ("keysync.cli.commands.applying", "cli"),
    ],
)
def test_layers_are_read_from_the_path(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_the_guard_sees_a_crossing(tmp_path: Path) -> None:
    # The rule itself, applied to a made-up adapter that reaches outward.
    source = tmp_path / "bad.py"
    source.write_text("from keysync.engine.session import Session\nfrom keysync import plan\n")
    imported = imported_modules(source)
    assert imported == {"keysync.engine.session", "keysync.plan"}
    assert [m for m in imported if layer_of(m) not in MAY_IMPORT["sinks"]] == ["keysync.engine.session"]


def imported_test_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0].startswith("test_")}


def test_no_test_module_imports_another(tmp_path: Path) -> None:
    # What tests share lives in helper modules at the tests root, beside conftest.py.
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50, "the guard sees the test modules in every folder"
    wrong = {str(path.relative_to(TESTS)): imported_test_modules(path) for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}
    # The rule itself, applied to a made-up test module that imports another.
    source = tmp_path / "test_bad.py"
    source.write_text("import test_plan\nfrom test_watch import watches\nfrom watching import Watch\n")
    assert imported_test_modules(source) == {"test_plan", "test_watch"}
