"""The `directory` sink: one file per key holding just its secret, metadata in a sidecar."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from keysync.errors import SinkError, SinkRefusedError
from keysync.keys import SecretRecord, SinkView, StoredEntry
from keysync.manifest.sinks import DirectorySinkConfig
from keysync.names import name_problem
from keysync.plan import Action
from keysync.sinks.base import SinkContext
from keysync.sinks.durable import (
    MAX_SECRET_FILE_BYTES,
    atomic_write,
    check_directory_ready,
    ensure_directory,
    probe_writable,
    read_local_text,
    record_size,
    size_of,
)
from keysync.sinks.groupcommit import GroupCommit
from keysync.sinks.lock import file_lock
from keysync.sinks.recordlines import RecordLines

SIDECAR = ".keysync.json"


class DirectorySink:
    concurrent_writes = True
    config_model = DirectorySinkConfig

    def __init__(self, config: DirectorySinkConfig, context: SinkContext) -> None:
        self._url = context.coderd_url
        self.path = context.resolve(config.path)
        self._meta: dict[str, dict[str, str]] | None = None
        self._lines: RecordLines | None = None  # the sidecar's, built at its first flush
        self._guard = threading.Lock()
        self._commit = GroupCommit(self._render_sidecar, self._write_sidecar)
        self._identity: tuple[int, int] | None = None  # the directory written into, once made

    def describe(self) -> str:
        return f"directory {self.path}"

    def local_paths(self) -> list[Path]:
        return [self.path]

    def lock(self, timeout: float | None) -> AbstractContextManager[None]:
        return file_lock(self.path.with_name(self.path.name + ".lock"), timeout)

    def read(self) -> SinkView:
        entries = {}
        for name, meta in self._load().items():
            secret = self._read_secret(name)
            if secret is not None:
                entries[name] = StoredEntry(
                    name,
                    meta.get("id", ""),
                    meta.get("key_prefix", ""),
                    secret[:11],
                    meta.get("coderd_url", self._url),
                )
        return SinkView(entries)

    def check_writable(self) -> None:
        self._load()
        probe_writable(self.path, size_of(self.path / SIDECAR) + record_size(self._url))
        self._ready()

    def check_ready(self) -> None:
        self._load()
        check_directory_ready(self.path)

    def prepare(self, actions: Sequence[Action]) -> dict[str, str]:
        """Before apply starts: the names it will write that the sidecar does not list yet are
        claimed in one sidecar write (so a file keysync writes is always one it can tell is its
        own, even after a crash), and a name whose file is someone else's is refused."""
        return self._claim(sorted({action.name for action in actions if action.creates}))

    def store(self, record: SecretRecord) -> None:
        refusal = self._claim([record.name]).get(record.name)
        if refusal is not None:
            raise SinkRefusedError(refusal)
        meta = self._load()
        self._ready()
        path = self._file(record.name)
        previous = (self._read_secret(record.name), meta.get(record.name))
        # The secret file is synced by itself; the sidecar's group commit syncs the directory.
        try:
            atomic_write(path, record.key.reveal().encode(), sync_directory=False)
        except SinkError:
            self._ready()  # the directory gone meanwhile: say that, not "no such file"
            raise
        try:
            self._commit.commit(lambda: self._set(meta, record.name, record.public()))
        except SinkError:
            self._restore(record.name, *previous)
            raise

    def _claim(self, names: list[str]) -> dict[str, str]:
        """Lists names in the sidecar before their files are written; refuses occupied ones."""
        meta = self._load()
        new = [name for name in names if name not in meta]
        refused = {name: self._not_ours(name) for name in new if os.path.lexists(self._file(name))}
        claimed = [name for name in new if name not in refused]
        if claimed:
            self._ready()
            self._commit.commit(lambda: self._set_all(meta, claimed))
        return refused

    def _set_all(self, meta: dict[str, dict[str, str]], names: list[str]) -> None:
        for name in names:
            self._set(meta, name, {})

    def _not_ours(self, name: str) -> str:
        return (
            f"directory sink: {self._file(name)} exists and keysync did not write it (it is not "
            f"in {SIDECAR}); keysync never replaces such a file: move it aside"
        )

    def _restore(self, name: str, secret: str | None, entry: dict[str, str] | None) -> None:
        """Puts back what a failed store replaced: replicas keep the secret they are using."""
        meta = self._load()
        with suppress(SinkError):  # the store's own error says more than this one
            if secret is None:
                self._file(name).unlink(missing_ok=True)
            else:
                atomic_write(self._file(name), secret.encode())
        self._commit.mutate(lambda: self._set(meta, name, entry))

    def remove(self, name: str, key_id: str = "") -> None:
        meta = self._load()
        if name not in meta:
            return  # a file keysync did not write is not keysync's to delete
        try:
            self._file(name).unlink(missing_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot remove {self._file(name)}: {exc.strerror}") from None
        self._commit.commit(lambda: self._set(meta, name, None))

    def _ready(self) -> None:
        """Makes the directory the first time; afterwards it must still be that one. One removed
        or replaced meanwhile took the secrets written into it: writing on would recreate it and
        report those delivered."""
        if self._identity is None:
            ensure_directory(self.path)
            self._identity = _identity(self.path)
        elif _identity(self.path) != self._identity:
            raise SinkError(
                f"sink directory {self.path} was removed or replaced while keysync wrote to it: "
                "the secrets written before are gone; run `keysync apply` again"
            )

    def _file(self, name: str) -> Path:
        if name_problem(name):  # a file name must never leave the directory
            raise SinkError(f"directory sink: {name[:80]!r} is no valid key name")
        return self.path / name

    def close(self) -> None:
        self._commit.close()
        with self._guard:  # nothing of this sink outlives it in memory
            self._meta, self._lines = None, None

    def _read_secret(self, name: str) -> str | None:
        text = read_local_text(self._file(name), "the secret file", MAX_SECRET_FILE_BYTES)
        return (text or "").strip() or None

    def _load(self) -> dict[str, dict[str, str]]:
        with self._guard:
            if self._meta is None:
                self._meta = self._parse_sidecar()
            return self._meta

    def _parse_sidecar(self) -> dict[str, dict[str, str]]:
        sidecar = self.path / SIDECAR
        text = read_local_text(sidecar, "the sidecar")
        if text is None:
            return {}
        try:
            document = json.loads(text)
            url, keys = document["coderd_url"], dict(document["keys"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise SinkError(f"{sidecar} is not a keysync sidecar; move it aside or fix it") from None
        if url != self._url:
            raise SinkError(
                f"sink directory {self.path} was made for coderd {url!r}, "
                f"not {self._url!r}; refusing to mix deployments"
            )
        return keys

    def _set(self, meta: dict[str, dict[str, str]], name: str, entry: dict[str, str] | None) -> None:
        """Sets (or with None, drops) a key's sidecar entry; called under the commit's lock."""
        if entry is None:
            meta.pop(name, None)
            if self._lines is not None:
                self._lines.drop(name)
        else:
            meta[name] = entry
            if self._lines is not None:
                self._lines.put(name, entry)

    def _render_sidecar(self) -> list[bytes]:
        if self._lines is None:
            self._lines = RecordLines((self._meta or {}).items())
        return self._lines.document(self._url)

    def _write_sidecar(self, data: list[bytes]) -> None:
        self._ready()
        atomic_write(self.path / SIDECAR, data)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino
