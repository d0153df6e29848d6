"""The only module that writes to the terminal: data to stdout, messages to stderr."""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

_lock = threading.RLock()  # re-entrant: a signal handler may write while progress holds it


def color_enabled(stream: TextIO, no_color: bool) -> bool:
    return not no_color and not os.environ.get("NO_COLOR") and stream.isatty()


def out(text: str) -> None:
    _write(sys.stdout, text)


def err(text: str) -> None:
    _write(sys.stderr, text)


def _write(stream: TextIO, text: str) -> None:
    with _lock:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


def ask(question: str) -> str:
    with _lock:
        sys.stderr.write(question)
        sys.stderr.flush()
    line = sys.stdin.readline()
    return line.strip()


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


class Progress:
    """On a terminal, one line rewritten in place; elsewhere one line per finished action."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._total = total
        self._done = 0
        self._failed = 0
        self._live = self._stream.isatty()

    def finished(self, line: str, ok: bool) -> None:
        with _lock:
            self._done += 1
            self._failed += 0 if ok else 1
            if self._live:
                self._stream.write(f"\r{self._done}/{self._total} done, {self._failed} failed")
                if not ok:
                    self._stream.write(f"\n{line}\n")
            else:
                self._stream.write(f"[{self._done}/{self._total}] {line}\n")
            self._stream.flush()

    def close(self) -> None:
        if self._live and self._done:
            with _lock:
                self._stream.write("\n")
                self._stream.flush()


def color_enabled_err(no_color: bool) -> bool:
    return color_enabled(sys.stderr, no_color)
