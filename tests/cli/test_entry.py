"""The fast entry point answers --version and --help exactly as click would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from keysync import __version__
from keysync.cli.entry import render_root_help
from keysync.cli.roothelp import ROOT_HELP

from conftest import KEYSYNC


def test_the_kept_root_help_is_what_click_renders() -> None:
    # On a mismatch: make roothelp
    assert render_root_help() == ROOT_HELP


def test_version_and_help_come_without_click() -> None:
    for flag, expected in (("--version", f"keysync, version {__version__}\n"), ("--help", ROOT_HELP)):
        done = subprocess.run([KEYSYNC, flag], capture_output=True, text=True, check=True)
        assert done.stdout == expected


def test_the_fast_path_imports_no_click() -> None:
    code = "import sys; from keysync.cli.entry import main; main(['--help']); print('click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.endswith("False\n")


def test_everything_else_goes_to_click() -> None:
    done = subprocess.run([KEYSYNC, "plan", "--help"], capture_output=True, text=True, check=True)
    assert "--detailed-exitcode" in done.stdout


def test_a_command_does_not_load_httpx_s_own_command_line(tmp_path: Path) -> None:
    # httpx's CLI brings rich and pygments along when they are installed: ~90 ms a command.
    probe = (
        "import sys; from keysync.cli.entry import main; main(['validate', '-f', 'k.yaml']); "
        "import httpx; print(sys.modules.get('httpx._main'), 'rich' in sys.modules, httpx.Client.__name__)"
    )
    (tmp_path / "k.yaml").write_text("version: 1\nkeys: [alpha]\n")
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip().splitlines()[-1] == "None False Client", done
