"""The lock file beside a local sink: one apply at a time, and the next one told who holds it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from keysync.errors import LockHeldError, SinkError
from keysync.sinks.durable import ensure_directory

# A planted symlink must not make keysync write its holder line into the link's target.
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def file_lock(path: Path, timeout: float | None) -> Iterator[None]:
    """An exclusive lock on `path`; who holds it is written inside for the next one to read."""
    ensure_directory(path.parent)
    fd = _open(path)
    try:
        _acquire(fd, path, timeout)
        holder = json.dumps(_holder()).encode()
        os.pwrite(fd, holder, 0)  # overwrite first, then trim: the file is never empty
        os.ftruncate(fd, len(holder))
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open(path: Path) -> int:
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SinkError(
                f"the sink lock {path} is a symbolic link: keysync does not follow it; remove it"
            ) from None
        raise SinkError(f"cannot open the sink lock {path}: {exc.strerror}") from None
    if not _is_regular(fd):
        os.close(fd)
        raise SinkError(f"the sink lock {path} is not a regular file; remove it")
    return fd


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _acquire(fd: int, path: Path, timeout: float | None) -> None:
    deadline = time.monotonic() + (timeout or 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockHeldError(_held_message(path, timeout)) from None
            time.sleep(0.05)


def _holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _held_message(path: Path, timeout: float | None) -> str:
    who = "another process"
    for _ in range(10):  # the holder may be writing its name this very moment
        try:
            holder, _end = json.JSONDecoder().raw_decode(path.read_text())
            who = f"process {holder['pid']} on {holder['host']} since {holder['since']}"
            break
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.02)
    waited = f" (waited {timeout:g}s)" if timeout else ""
    return (
        f"sink lock {path} is held by {who}{waited}; wait for it to finish, "
        "or pass --lock-timeout DURATION to wait"
    )
