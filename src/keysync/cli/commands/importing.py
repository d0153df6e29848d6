"""`keysync import NAME`: put a secret you already hold into the sink, once it is checked to be
the live key's. The secret comes on stdin only: command lines and their history leak."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from keysync.cli import console
from keysync.cli.commands import boundary
from keysync.cli.commands.applying import seconds
from keysync.cli.group import make_options, shared_options

_MAX_SECRET_BYTES = 4096

if TYPE_CHECKING:
    from keysync.secret import Secret


@click.command(name="import", context_settings={"allow_extra_args": True})
@shared_options
@click.argument("name")
@click.option("--lock-timeout", metavar="DURATION", help="Wait this long for the sink lock (e.g. 30s).")
@boundary
def import_secret(name: str, lock_timeout: str | None, **kwargs: Any) -> int:
    """Put the secret of the live key NAME, read from stdin, into the sink.

    The secret is checked first: its first 11 characters must be the live key's key_prefix.
    It is never echoed.

    \b
    Examples:
      keysync import gateway-us-east < gateway-us-east.key
      vault kv get -field=key secret/old/gw | keysync import gw
    """
    from keysync.adoption import imported_record
    from keysync.engine.execution import check_git
    from keysync.engine.session import Session

    _refuse_extra_arguments(name)
    secret = _read_stdin(name)
    session = Session(make_options(kwargs))
    try:
        manifest = session.loaded.manifest
        record = imported_record(name, secret, session.client.list_keys(), manifest, session.coderd_url)
        check_git(session, force=False)
        with session.sink.lock(seconds(lock_timeout)):
            session.sink.check_writable()
            session.sink.store(record)
        where = session.sink.describe()
    finally:
        session.close()
    if session.options.format == "json":
        from keysync.plandoc import FORMAT_VERSION

        document = {"format_version": FORMAT_VERSION, "imported": name, "key_prefix": record.key_prefix}
        console.out(json.dumps({**document, "sink": where}, indent=2))
    else:
        console.out(f"Imported the secret of {name} (key_prefix {record.key_prefix}) into {where}.")
    return 0


def _refuse_extra_arguments(name: str) -> None:
    # click would quote an extra argument back, and the one a user adds here is the secret.
    from keysync.errors import UsageError

    if click.get_current_context().args:
        raise UsageError(
            f"import {name} takes the secret on stdin only, never as an argument (command lines "
            "leak): nothing was written; if you typed the secret, treat it as exposed"
        )


def _read_stdin(name: str) -> Secret:
    from keysync.errors import UsageError
    from keysync.secret import Secret

    if console.stdin_is_terminal():
        raise UsageError(
            f"import {name} reads the secret from stdin, not from a terminal: "
            f"pipe it in, e.g. `keysync import {name} < {name}.key`"
        )
    data = sys.stdin.buffer.read(_MAX_SECRET_BYTES + 1)
    if len(data) > _MAX_SECRET_BYTES:
        raise UsageError(f"import {name}: stdin holds more than one key; nothing was written")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"import {name}: stdin is not text; nothing was written") from None
    if not text:
        raise UsageError(f"import {name}: stdin is empty: pipe the key's secret in")
    return Secret(text)


COMMANDS = [import_secret]
