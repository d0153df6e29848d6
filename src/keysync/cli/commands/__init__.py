"""The commands, each a function returning an exit code, behind one error boundary."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any

import click

from keysync.cli import console


def boundary(func: Callable[..., int]) -> Callable[..., int]:
    """Expected failures become one line and exit 1; anything else is a bug and says so."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        from keysync.errors import KeysyncError

        verbose = bool(kwargs.get("verbose"))
        try:
            return func(*args, **kwargs)
        except KeysyncError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                console.err(f"keysync: error: {console.printable(line)}")
            return 1
        except (KeyboardInterrupt, click.exceptions.Abort):
            raise
        except Exception as exc:
            console.err(f"keysync: internal error (a bug, please report it): {type(exc).__name__}")
            if verbose:
                console.err(traceback.format_exc())
            return 1

    return wrapper


def register(group: click.Group) -> None:
    from keysync.cli.commands import applying, importing, inspecting, planning, serving, watching

    for module in (inspecting, importing, planning, applying, serving, watching):
        for command in module.COMMANDS:
            group.add_command(command)
