"""The optional JSON file that carries the key store across restarts.

Like Coder's database it holds a sha256 of each secret, never the secret itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from keysync.devserver.gojson import format_time
from keysync.devserver.model import StoredKey

FORMAT_VERSION = 1


class StateFileError(Exception):
    """The state file exists but cannot be read as dev server state."""


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[StoredKey]:
        """The keys saved last time; none when the file does not exist yet."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [_key_from(item) for item in _key_items(data)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"cannot read state file {self.path}: {exc}") from exc

    def save(self, keys: list[StoredKey]) -> None:
        """Replace the file atomically, so a crash leaves the old state or the new one."""
        data = {"version": FORMAT_VERSION, "keys": [_key_data(key) for key in keys]}
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _key_items(data: Any) -> list[Any]:
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"expected an object with version {FORMAT_VERSION}")
    items = data["keys"]
    if not isinstance(items, list):
        raise ValueError("keys must be a list")
    return items


def _key_from(item: dict[str, Any]) -> StoredKey:
    last_used = item.get("last_used_at")
    return StoredKey(
        id=str(item["id"]),
        name=str(item["name"]),
        key_prefix=str(item["key_prefix"]),
        hashed_secret=str(item["hashed_secret"]),
        created_at=datetime.fromisoformat(item["created_at"]),
        last_seen_at=datetime.fromisoformat(last_used) if last_used else None,
    )


def _key_data(key: StoredKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "hashed_secret": key.hashed_secret,
        "created_at": format_time(key.created_at),
        "last_used_at": format_time(key.last_seen_at) if key.last_seen_at else None,
    }
