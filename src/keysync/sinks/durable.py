"""Durable local files: atomic replace with fsync, a lock beside the sink, group commit."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from keysync.errors import LockHeldError, SinkError

_counter = iter(range(1 << 62))
Snapshot = TypeVar("Snapshot")
_IOV_MAX = 1024  # POSIX's floor for the pieces one writev may take


def ensure_directory(path: Path) -> None:
    """Creates path and any missing parents, each private (0700) whatever the umask."""
    missing = []
    target = path
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    if not path.is_dir():
        raise SinkError(f"cannot create directory {target}: {path} is not a directory")
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
    except OSError as exc:
        raise SinkError(f"cannot create directory {exc.filename or path}: {exc.strerror}") from None


def atomic_write(path: Path, data: bytes | Sequence[bytes], sync_directory: bool = True) -> None:
    """Replaces path with data (bytes, or pieces written in order), mode 0600 whatever the umask;
    durable on return."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, [data] if isinstance(data, bytes) else data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        if sync_directory:
            fsync_directory(path.parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SinkError(f"cannot write {path}: {exc.strerror}") from None


def _write_all(fd: int, pieces: Sequence[bytes]) -> None:
    """Writes the pieces in order, a gathered write at a time, without joining them first."""
    for start in range(0, len(pieces), _IOV_MAX):
        batch = pieces[start : start + _IOV_MAX]
        written = os.writev(fd, batch)
        if written < sum(len(piece) for piece in batch):  # a short write: rare, finish it plainly
            view = memoryview(b"".join(batch))[written:]
            while view:
                view = view[os.write(fd, view) :]


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_directory_ready(directory: Path) -> None:
    """What probe_writable finds, without writing: the directory, or the ancestor it would be
    created in, must be a directory keysync may write to (plan's read-only preflight)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SinkError(f"sink directory {directory} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SinkError(f"sink directory {existing} is not writable: permission denied")


def probe_writable(directory: Path) -> None:
    ensure_directory(directory)
    probe = directory / f".keysync-probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise SinkError(f"sink directory {directory} is not writable: {exc.strerror}") from None


@contextmanager
def file_lock(path: Path, timeout: float | None) -> Iterator[None]:
    """An exclusive lock on `path`; who holds it is written inside for the next one to read."""
    ensure_directory(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SinkError(f"cannot open the sink lock {path}: {exc.strerror}") from None
    try:
        _acquire(fd, path, timeout)
        holder = json.dumps(_holder()).encode()
        os.pwrite(fd, holder, 0)  # overwrite first, then trim: the file is never empty
        os.ftruncate(fd, len(holder))
        yield
    finally:
        os.close(fd)  # closing releases the lock


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


class _Batch:
    """The updates one flush makes durable; each waiter wakes once, when its batch is done."""

    def __init__(self) -> None:
        self.members = 0
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommit(Generic[Snapshot]):
    """Makes concurrent updates durable together: one flush covers every update made before it.

    `commit(update)` applies `update` under the lock and returns once a flush that started after
    it has succeeded. A flusher thread writes one batch at a time, so N threads finishing together
    pay for about one fsync, not N, and each of them wakes exactly once.
    """

    def __init__(
        self, snapshot: Callable[[], Snapshot], flush: Callable[[Snapshot], None], linger: float = 0.002
    ) -> None:
        self._snapshot = snapshot
        self._flush = flush
        self._linger = linger
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._open = _Batch()
        self._last_size = 0
        self._flusher: threading.Thread | None = None

    def commit(self, update: Callable[[], None]) -> None:
        with self._lock:
            update()
            batch = self._open
            batch.members += 1
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="keysync-sink-flush", daemon=True)
                self._flusher.start()
            self._wanted.notify()
        batch.done.wait()
        if batch.error is not None:
            error = batch.error
            raise SinkError(str(error) if isinstance(error, SinkError) else f"sink write failed: {error}")

    def mutate(self, update: Callable[[], None]) -> None:
        """Applies update under the lock the flusher reads with, without flushing (a rollback)."""
        with self._lock:
            update()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._open.members:
                    self._wanted.wait()
            # When updates come together, a moment's wait lets more of them share this flush: the
            # document is rewritten whole, so fewer, larger batches keep a big apply linear.
            if self._last_size > 1:
                time.sleep(self._linger)
            with self._lock:
                batch, self._open = self._open, _Batch()
                self._last_size = batch.members
                try:
                    data = self._snapshot()
                except BaseException as exc:
                    batch.error = exc
            if batch.error is None:
                try:
                    self._flush(data)
                except BaseException as exc:
                    batch.error = exc
            batch.done.set()
