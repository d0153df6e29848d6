"""Durable local files: atomic replace with fsync, private directories, the writability probe."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from keysync.errors import SinkError
from keysync.keys import SecretRecord
from keysync.secret import Secret

_counter = iter(range(1 << 62))
# Files keysync creates beside a sink: never through a planted symlink, never an existing file.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IOV_MAX = 1024  # POSIX's floor for the pieces one writev may take


MAX_DOCUMENT_BYTES = 64 << 20  # a sink document of 100,000 keys is about 30 MiB
MAX_SECRET_FILE_BYTES = 64 << 10


def read_local_text(path: Path, what: str, limit: int = MAX_DOCUMENT_BYTES) -> str | None:
    """The text of a regular file keysync reads back (None when there is none); a device, a
    FIFO, a directory, a file over `limit` or one that is not UTF-8 is a SinkError naming `what`
    (`path` comes from the manifest, which a pull request may change)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SinkError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SinkError(f"cannot read {what} {path}: not a regular file")
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise SinkError(f"cannot read {what} {path}: larger than {limit >> 10} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SinkError(f"cannot read {what} {path}: not UTF-8 text") from None


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
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
    except OSError as exc:  # nothing of ours to clean up: what is there is not keysync's
        raise SinkError(f"cannot write {path}: {exc.strerror}") from None
    try:
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


def probe_writable(directory: Path, size: int) -> None:
    """Writes and syncs a file of `size` bytes in directory, then removes it: a full disk or a
    file size limit shows here, before anything is destroyed, not at the first secret."""
    ensure_directory(directory)
    probe = directory / f".keysync-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, _CREATE_FLAGS, 0o600)
        try:
            _write_all(fd, [os.urandom(size)])  # random: a compressing filesystem cannot shrink it
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise SinkError(f"sink directory {directory} is not writable: {exc.strerror}") from None


def probe_record(coderd_url: str) -> SecretRecord:
    """A record as large as a real one can be (names are at most 64 characters), holding no
    secret: what a writability probe writes."""
    name = "k" * 64
    return SecretRecord(
        name=name,
        key=Secret("s" * 128),
        id="00000000-0000-0000-0000-000000000000",
        key_prefix="p" * 11,
        created_at="2000-01-01T00:00:00.000000Z",
        coderd_url=coderd_url,
        live_name=f"{name}-r99",
    )


def record_size(coderd_url: str) -> int:
    """The bytes one record adds to a sink document, at its largest: what the probe adds to what
    the sink holds already."""
    record = probe_record(coderd_url)
    return len(json.dumps({record.name: record.document()}, indent=4)) + 64


def size_of(path: Path) -> int:
    """The size of the file at path, 0 when there is none."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
