"""The audit trail: one JSON line per action carried out, appended and fsynced. Never a secret."""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keysync import __version__
from keysync.errors import AuditError
from keysync.outcomes import Outcome


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._host = socket.gethostname()
        self._user = _user()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"audit log {path} is not writable: {exc.strerror}") from None

    def record(self, outcome: Outcome, manifest_sha256: str) -> None:
        self._append(self._entry(outcome, manifest_sha256))

    def event(self, event: str, **fields: str) -> None:
        """A line that records no action: a leadership change of `watch --leader-elect`."""
        time = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        context = {"keysync_version": __version__, "host": self._host, "user": self._user}
        self._append({"time": time, "event": event, **fields, **context})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            try:
                os.write(self._fd, line.encode())
                os.fsync(self._fd)
            except OSError as exc:
                raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror}") from None

    def _entry(self, outcome: Outcome, manifest_sha256: str) -> dict[str, Any]:
        action = outcome.action
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "action": action.action,
            "reason": action.reason,
            "name": action.name,
            "result": "ok" if outcome.ok else "failed",
            "manifest_sha256": manifest_sha256,
            "keysync_version": __version__,
            "host": self._host,
            "user": self._user,
        }
        if action.live is not None:
            entry["old_id"] = action.live.id
            entry["old_key_prefix"] = action.live.key_prefix
        if outcome.created is not None:
            entry["new_id"] = outcome.created.id
            entry["new_key_prefix"] = outcome.created.key_prefix
        entry["id"] = entry.get("new_id", entry.get("old_id"))
        entry["key_prefix"] = entry.get("new_key_prefix", entry.get("old_key_prefix"))
        if outcome.error:
            entry["error"] = outcome.error
        return entry

    def close(self) -> None:
        os.close(self._fd)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
