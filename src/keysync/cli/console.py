"""The only module that writes to the terminal: data to stdout, messages to stderr."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import TextIO

_lock = threading.RLock()  # re-entrant: a signal handler may write while progress holds it


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and line feed
_lost: set[str] = set()  # "stdout", "stderr": streams a write failed on (a reader went away)


def color_enabled(stream: TextIO | None, no_color: bool) -> bool:
    return not no_color and not os.environ.get("NO_COLOR") and stream is not None and _isatty(stream)


def out(text: str) -> bool:
    """Writes a line of data; False when stdout is gone (the text is lost, and `lost()` says so)."""
    return _write("stdout", text if text.endswith("\n") else text + "\n")


def err(text: str) -> bool:
    return _write("stderr", text if text.endswith("\n") else text + "\n")


def printable(text: str) -> str:
    """The text with terminal control characters shown as escapes (`\\x1b`), not obeyed: error
    lines quote paths, names and answers that came from elsewhere."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def lost() -> list[str]:
    """The streams output was lost on: a command that lost any must not exit 0."""
    return sorted(_lost)


def _write(name: str, text: str) -> bool:
    """Never raises: a closed pipe or terminal must not stop what keysync is doing (an apply
    half done, its audit trail still to write)."""
    with _lock:
        if name in _lost:
            return False
        stream = getattr(sys, name)
        try:
            stream.write(text)
            stream.flush()
            return True
        except (OSError, ValueError, AttributeError):  # EPIPE, EIO; closed; None when never open
            _give_up(name, stream)
            return False


def _give_up(name: str, stream: TextIO | None) -> None:
    """Marks the stream lost and points its descriptor at /dev/null, so that the interpreter's
    last flush at exit does not fail on it again."""
    _lost.add(name)
    try:
        assert stream is not None
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, AssertionError):
        pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


class ConsoleHandler(logging.Handler):
    """Log records through `err`, so that a stderr gone away costs a lost line, not an error."""

    def emit(self, record: logging.LogRecord) -> None:
        err(self.format(record))


def ask(question: str) -> str:
    _write("stderr", question)
    line = sys.stdin.readline()
    return line.strip()


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and _isatty(sys.stdin)


class Progress:
    """On a terminal, one line rewritten in place; elsewhere one line per finished action."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._failed = 0
        self._live = sys.stderr is not None and _isatty(sys.stderr)

    def finished(self, line: str, ok: bool) -> None:
        with _lock:
            self._done += 1
            self._failed += 0 if ok else 1
            if self._live:
                counts = f"\r{self._done}/{self._total} done, {self._failed} failed"
                _write("stderr", counts + (f"\n{line}\n" if not ok else ""))
            else:
                _write("stderr", f"[{self._done}/{self._total}] {line}\n")

    def close(self) -> None:
        if self._live and self._done:
            _write("stderr", "\n")


def color_enabled_err(no_color: bool) -> bool:
    return color_enabled(sys.stderr, no_color)
