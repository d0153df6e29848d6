"""The import paths from before the layer folders keep working for one release, with a warning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from keysync.moved import MOVED

pytestmark = pytest.mark.filterwarnings("default::DeprecationWarning")


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_gives_the_moved_module_and_says_where(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_a_command_module_is_found_under_its_old_package() -> None:
    sys.modules.pop("keysync.commands.planning", None)
    with pytest.warns(DeprecationWarning, match=r"keysync\.cli\.commands\.planning"):
        planning = importlib.import_module("keysync.commands.planning")
    assert planning is importlib.import_module("keysync.cli.commands.planning")


def test_the_manifest_package_answers_its_old_names() -> None:
    from keysync.manifest import model

    with pytest.warns(DeprecationWarning, match=r"keysync\.manifest\.model\.Manifest"):
        from keysync.manifest import Manifest
    assert Manifest is model.Manifest
    with pytest.raises(ImportError):
        from keysync.manifest import NoSuchThing  # noqa: F401


def test_unknown_modules_are_not_taken() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("keysync.no_such_module")


def test_the_new_paths_import_without_a_warning() -> None:
    # A fresh interpreter, warnings as errors: nothing keysync imports itself is deprecated.
    probe = "import keysync.cli.group, keysync.engine.watch, keysync.sinks.vault"
    done = subprocess.run([sys.executable, "-W", "error", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
