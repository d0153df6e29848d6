"""The `exec` sink's journal: per key name, the key last handed to the command and the key whose
delivery the command confirmed (exit 0). No secrets: ids only.

It lives beside the manifest (`.keysync-exec-journal.json`, mode 0600), one section per Coder URL.
A command cannot be read back, so this is what lets plan see a delivery that never finished: a
name in the journal is held only by the key it confirmed. A name missing from it (a deployment
older than the journal, or keys never handed to this sink) is assumed held, as before.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from keysync.errors import SinkError
from keysync.keys import SecretRecord
from keysync.sinks.durable import atomic_write, ensure_directory, read_local_text
from keysync.sinks.groupcommit import GroupCommit

JOURNAL = ".keysync-exec-journal.json"

Entries = dict[str, dict[str, str]]  # name -> {"delivered": id or "", "handed": id}


class DeliveryJournal:
    def __init__(self, path: Path, coderd_url: str) -> None:
        self.path = path
        self._url = coderd_url
        self._document: dict[str, Entries] | None = None  # every Coder URL's section
        self._guard = threading.Lock()
        self._commit = GroupCommit(self._render, self._write)

    def delivered(self) -> dict[str, str]:
        """Per name, the id of the key whose delivery was confirmed ("" when none was yet)."""
        return {name: entry.get("delivered", "") for name, entry in self._entries().items()}

    def expect(self, assumed: dict[str, str]) -> None:
        """Starts tracking names it has no entry for, each held by the id given ("" for none)."""
        entries = self._entries()
        new = {name: held for name, held in assumed.items() if name not in entries}
        if new:
            self._commit.commit(lambda: entries.update({n: {"delivered": h} for n, h in new.items()}))

    def handed(self, record: SecretRecord) -> None:
        """Before the command runs: which key it is being handed. A name not tracked yet stays
        untracked until confirmed: which key held it before is not known here, and guessing
        "none" could have plan retire the generation its replicas use."""
        entries = self._entries()
        if record.name in entries:
            self._commit.commit(lambda: self._update(entries, record.name, handed=record.id))

    def confirmed(self, record: SecretRecord) -> None:
        """After the command's exit 0: the name is held by this key now."""
        entries = self._entries()
        self._commit.commit(lambda: self._update(entries, record.name, delivered=record.id))

    def forget(self, name: str) -> None:
        entries = self._entries()
        if name in entries:
            self._commit.commit(lambda: self._drop(entries, name))

    def close(self) -> None:
        self._commit.close()
        with self._guard:
            self._document = None

    @staticmethod
    def _drop(entries: Entries, name: str) -> None:
        entries.pop(name, None)

    @staticmethod
    def _update(entries: Entries, name: str, **fields: str) -> None:
        entries[name] = {"delivered": "", **entries.get(name, {}), **fields}

    def _entries(self) -> Entries:
        with self._guard:
            if self._document is None:
                self._document = self._parse()
            return self._document.setdefault(self._url, {})

    def _parse(self) -> dict[str, Entries]:
        text = read_local_text(self.path, "the exec sink journal")
        if text is None:
            return {}
        try:
            document = json.loads(text)
            if document.get("version") != 1:
                raise ValueError("version")
            return {str(url): _entries(keys) for url, keys in document["deployments"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise SinkError(
                f"{self.path} is not a keysync exec sink journal; move it aside or fix it"
            ) from None

    def _render(self) -> bytes:
        document = {"version": 1, "deployments": self._document or {}}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    def _write(self, data: bytes) -> None:
        ensure_directory(self.path.parent)
        atomic_write(self.path, data)


def _entries(keys: dict[str, dict[str, str]]) -> Entries:
    return {str(name): {str(k): str(v) for k, v in entry.items()} for name, entry in keys.items()}
