"""The console entry point. `--version` and `--help` answer without importing click, so that a
pipeline's first call to keysync costs little more than starting Python."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "_KEYSYNC_COMPLETE" in os.environ:  # shell completion is click's
        from keysync.cli.group import main as completing

        return completing(args)
    if args == ["--version"]:
        from keysync import __version__

        sys.stdout.write(f"keysync, version {__version__}\n")
        return 0
    if args in ([], ["--help"], ["-h"]):
        from keysync.cli.roothelp import ROOT_HELP

        sys.stdout.write(ROOT_HELP)
        return 0
    skip_httpx_command_line()
    from keysync.cli.group import main as cli_main

    try:
        return cli_main(args)
    finally:
        # Everything is written and closed: spare the exit its collection of every object left
        # (tens of milliseconds after a big apply).
        gc.freeze()


def skip_httpx_command_line() -> None:
    """httpx imports its own command line (and with it rich and pygments, when installed) unless
    that import fails; keysync never uses it, and every command would pay about 90 ms for it."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def render_root_help() -> str:
    """What click prints for `keysync --help` at 80 columns: the source of keysync.cli.roothelp."""
    import click

    from keysync.cli.commands import register
    from keysync.cli.group import cli

    register(cli)
    settings = {**cli.context_settings, "terminal_width": 78}  # click's width on an 80-column terminal
    with click.Context(cli, info_name="keysync", **settings) as context:
        return cli.get_help(context) + "\n"


def write_root_help() -> None:
    """Regenerates keysync/roothelp.py (`make roothelp`) after the root help changed."""
    import json
    from pathlib import Path

    lines = "".join(f"    {json.dumps(line)}\n" for line in render_root_help().splitlines(keepends=True))
    path = Path(__file__).with_name("roothelp.py")
    doc = '"""The text of `keysync --help`, kept in step with click by tests/cli/test_entry.py."""'
    path.write_text(f"{doc}\n\nROOT_HELP = (\n{lines})\n")


if __name__ == "__main__":
    sys.exit(main())
