"""The keys the dev server knows, behind one lock."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import secrets
import threading
import uuid
from datetime import UTC, datetime

from keysync.devserver.config import ALPHANUMERIC
from keysync.devserver.model import StoredKey
from keysync.devserver.statefile import StateFile

SECRET_LENGTH = 43
PREFIX_LENGTH = 11


class DuplicateNameError(Exception):
    """Another key already has this name, compared case-insensitively."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyMaterial:
    """Ids and secrets: from `secrets` normally, from a seeded generator for reproducible runs."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(f"keysync-devserver-keys:{seed}") if seed is not None else None

    def new_id(self) -> str:
        if self._rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def new_secret(self) -> str:
        choice = secrets.choice if self._rng is None else self._rng.choice
        return "".join(choice(ALPHANUMERIC) for _ in range(SECRET_LENGTH))


class KeyStore:
    def __init__(self, material: KeyMaterial, state: StateFile | None = None) -> None:
        self._material = material
        self._state = state
        self._lock = threading.Lock()
        self._keys: dict[str, StoredKey] = {}
        self._names: dict[str, str] = {}
        self._prefixes: dict[str, str] = {}

    def load(self) -> None:
        """Read the state file, if there is one."""
        if self._state is None:
            return
        with self._lock:
            for key in self._state.load():
                self._index(key)

    def list(self) -> list[StoredKey]:
        """Copies, oldest first; a stable sort keeps insertion order for equal times."""
        with self._lock:
            keys = [dataclasses.replace(key) for key in self._keys.values()]
        return sorted(keys, key=lambda key: key.created_at)

    def create(self, name: str) -> tuple[StoredKey, str]:
        """Store a new key and return it with its secret, which is never kept."""
        with self._lock:
            if name.lower() in self._names:
                raise DuplicateNameError(name)
            secret = self._unused_secret()
            key = StoredKey(
                id=self._unused_id(),
                name=name,
                key_prefix=secret[:PREFIX_LENGTH],
                hashed_secret=hash_secret(secret),
                created_at=datetime.now(UTC),
            )
            self._index(key)
            self._save()
            return dataclasses.replace(key), secret

    def delete(self, key_id: str) -> bool:
        with self._lock:
            key = self._keys.pop(key_id, None)
            if key is None:
                return False
            del self._names[key.name.lower()]
            del self._prefixes[key.key_prefix]
            self._save()
            return True

    def find(self, secret: str) -> StoredKey | None:
        """The key whose secret this is; None for an unknown secret."""
        with self._lock:
            key = self._keys.get(self._prefixes.get(secret[:PREFIX_LENGTH], ""))
            if key is None or not hmac.compare_digest(key.hashed_secret, hash_secret(secret)):
                return None
            return dataclasses.replace(key)

    def heartbeat(self, key_id: str) -> bool:
        """Mark the key as seen now; False when it no longer exists."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                return False
            key.last_seen_at = datetime.now(UTC)
            self._save()
            return True

    def _unused_id(self) -> str:
        # A seed replayed over a state file it already filled would repeat its ids.
        while (key_id := self._material.new_id()) in self._keys:
            pass
        return key_id

    def _unused_secret(self) -> str:
        # Coder keeps prefixes unique and retries on a collision; so do we.
        while (secret := self._material.new_secret())[:PREFIX_LENGTH] in self._prefixes:
            pass
        return secret

    def _index(self, key: StoredKey) -> None:
        self._keys[key.id] = key
        self._names[key.name.lower()] = key.id
        self._prefixes[key.key_prefix] = key.id

    def _save(self) -> None:
        if self._state is not None:
            self._state.save(list(self._keys.values()))
