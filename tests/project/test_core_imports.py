"""Guard: the pure core (manifest, plan, rendering, apply) never needs httpx or click."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "keysync.plan",
    "keysync.manifest.model",
    "keysync.manifest.load",
    "keysync.render",
    "keysync.plandoc",
    "keysync.engine.applier",
]
FORBIDDEN = ("httpx", "click")
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})))
"""


def imported_forbidden(*modules: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=set(FORBIDDEN)), *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout)
    return result


def test_the_core_imports_neither_httpx_nor_click() -> None:
    # One fresh interpreter suffices: a subset of these modules imports a subset of theirs.
    assert imported_forbidden(*CORE) == []


def test_the_guard_can_see_a_forbidden_import() -> None:
    # Proves the probe works: the client is an adapter and does import httpx.
    assert "httpx" in imported_forbidden("keysync.coder.client")
