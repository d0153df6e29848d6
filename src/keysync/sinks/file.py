"""The `file` sink: every secret in one JSON or env document."""

from __future__ import annotations

import json
import os
import re
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from keysync.errors import SinkError
from keysync.keys import SecretRecord, SinkView, StoredEntry
from keysync.manifest.sinks import FileSinkConfig, env_name
from keysync.secret import Secret
from keysync.sinks.base import SinkContext
from keysync.sinks.durable import (
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

_HEADER = "# keysync coderd_url="
_META = "# keysync key "


class FileSink:
    concurrent_writes = True
    config_model = FileSinkConfig

    def __init__(self, config: FileSinkConfig, context: SinkContext) -> None:
        self._config = config
        self._url = context.coderd_url
        self.path = context.resolve(config.path)
        self._records: dict[str, SecretRecord] | None = None
        self._lines: RecordLines | None = None  # built at the first JSON flush, then kept up to date
        self._directory_ready = False
        self._guard = threading.Lock()
        self._commit = GroupCommit(self._render, self._write)

    def describe(self) -> str:
        return f"file {self.path}"

    def local_paths(self) -> list[Path]:
        target = self._target()
        return [self.path] if target == self.path else [self.path, target]

    def lock(self, timeout: float | None) -> AbstractContextManager[None]:
        return file_lock(self.path.with_name(self.path.name + ".lock"), timeout)

    def read(self) -> SinkView:
        return SinkView({name: StoredEntry.of(r) for name, r in self._load().items()})

    def check_writable(self) -> None:
        self._load()
        target = self._target()
        # The document is replaced whole: the new copy must fit beside the old one.
        probe_writable(target.parent, size_of(target) + record_size(self._url))

    def check_ready(self) -> None:
        self._load()
        check_directory_ready(self._target().parent)

    def store(self, record: SecretRecord) -> None:
        records = self._load()
        previous = records.get(record.name)
        try:
            self._commit.commit(lambda: self._put(records, record))
        except SinkError:
            self._commit.mutate(lambda: self._restore(records, record.name, previous))
            raise

    def remove(self, name: str, key_id: str = "") -> None:
        records = self._load()
        if name in records:
            self._commit.commit(lambda: self._drop(records, name))

    def close(self) -> None:
        self._commit.close()
        with self._guard:  # the records hold secrets: nothing keeps them once the sink is closed
            self._records, self._lines = None, None

    def _load(self) -> dict[str, SecretRecord]:
        with self._guard:
            if self._records is None:
                self._records = self._parse(self._read_text())
            return self._records

    def _read_text(self) -> str | None:
        return read_local_text(self.path, "sink file")

    def _parse(self, text: str | None) -> dict[str, SecretRecord]:
        if text is None or not text.strip():
            return {}
        try:
            if self._config.format == "env":
                url, records = _parse_env(text, self._config.prefix)
            else:
                url, records = _parse_json(text)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise SinkError(
                f"sink file {self.path} is not a keysync {self._config.format} "
                "document; move it aside or fix it"
            ) from None
        if url != self._url:
            raise SinkError(
                f"sink file {self.path} was made for coderd {url!r}, not {self._url!r}; "
                "refusing to mix deployments"
            )
        return records

    def _restore(self, records: dict[str, SecretRecord], name: str, previous: SecretRecord | None) -> None:
        self._drop(records, name)
        if previous is not None:
            self._put(records, previous)

    def _put(self, records: dict[str, SecretRecord], record: SecretRecord) -> None:
        records[record.name] = record
        if self._lines is not None:
            self._lines.put(record.name, record.document())

    def _drop(self, records: dict[str, SecretRecord], name: str) -> None:
        records.pop(name, None)
        if self._lines is not None:
            self._lines.drop(name)

    def _render(self) -> list[bytes]:
        records = self._records or {}
        if self._config.format == "env":
            return [_render_env(self._url, dict(sorted(records.items())), self._config.prefix).encode()]
        if self._lines is None:
            self._lines = RecordLines((name, record.document()) for name, record in records.items())
        return self._lines.document(self._url)

    def _write(self, data: list[bytes]) -> None:
        target = self._target()
        if not self._directory_ready:
            ensure_directory(target.parent)
            self._directory_ready = True
        atomic_write(target, data)

    def _target(self) -> Path:
        """Where the document goes: a sink file that is a symbolic link is written through to
        the file it points to (replacing the link would leave that file stale)."""
        return Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path


def _parse_json(text: str) -> tuple[str, dict[str, SecretRecord]]:
    document = json.loads(text)
    if document.get("version") != 1:
        raise ValueError("version")
    return document["coderd_url"], {
        name: _record(name, fields, document["coderd_url"]) for name, fields in document["keys"].items()
    }


def _record(name: str, fields: dict[str, Any], url: str) -> SecretRecord:
    return SecretRecord(
        name=name,
        key=Secret(str(fields["key"])),
        id=str(fields.get("id", "")),
        key_prefix=str(fields.get("key_prefix", "")),
        created_at=str(fields.get("created_at", "")),
        coderd_url=str(fields.get("coderd_url", url)),
        live_name=str(fields.get("live_name", name)),
    )


def _render_env(url: str, records: dict[str, SecretRecord], prefix: str) -> str:
    lines = [f"{_HEADER}{url}"]
    for name, record in records.items():
        meta = " ".join(f"{k}={v}" for k, v in record.public().items() if k != "coderd_url")
        lines.append(f"{_META}{meta}")
        lines.append(f"{env_name(name, prefix)}={record.key.reveal()}")
    return "\n".join(lines) + "\n"


def _parse_env(text: str, prefix: str) -> tuple[str, dict[str, SecretRecord]]:
    url = None
    metas: list[dict[str, str]] = []
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(_HEADER):
            url = line[len(_HEADER) :].strip()
        elif line.startswith(_META):
            metas.append(dict(re.findall(r"(\w+)=(\S*)", line[len(_META) :])))
        elif "=" in line and not line.startswith("#"):
            variable, _, value = line.partition("=")
            values[variable.strip()] = value.strip()
    if url is None:
        raise ValueError("no header")
    records = {}
    for meta in metas:
        secret = values.get(env_name(meta["name"], prefix))
        if secret is not None:
            records[meta["name"]] = _record(meta["name"], {**meta, "key": secret}, url)
    return url, records
