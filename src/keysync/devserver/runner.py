"""The dev server in the foreground, as `keysync dev-server` runs it."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from keysync.devserver.config import DevServerConfig
from keysync.devserver.server import DevServer, DevServerError


def run(config: DevServerConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly and return 0 (1 if it cannot start).

    The first line on `out` is `listening on URL`, written once connections are accepted.
    """
    server = DevServer(config, log=err)
    stopping = threading.Event()
    with _stop_on_signals(stopping):
        try:
            server.start()
        except DevServerError as exc:
            err.write(f"dev server: {exc}\n")
            err.flush()
            return 1
        try:
            _announce(server, out, err)
            while not stopping.wait(0.5):
                pass
        finally:
            server.stop()
    return 0


def _announce(server: DevServer, out: TextIO, err: TextIO) -> None:
    out.write(f"listening on {server.url}\n")
    out.flush()
    if server.token_generated:
        err.write(f"owner session token: {server.token}\n")
        err.flush()


@contextmanager
def _stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    # Signal handlers can only be installed from the main thread; elsewhere the caller stops us.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, lambda _number, _frame: stopping.set())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
