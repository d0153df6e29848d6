"""Many live keys at once: a dev server state file and the matching file sink, written directly.

The state file follows src/keysync/devserver/statefile.py (version 1, a sha256 of each secret);
the sink follows keysync's file sink JSON layout. Creating 10,000 keys over HTTP would instead
rewrite the state file once per create.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

_ALPHANUMERIC = string.ascii_letters + string.digits
_SECRET_LENGTH = 43
_PREFIX_LENGTH = 11
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SeededKey:
    name: str
    id: str
    secret: str
    created_at: str

    @property
    def key_prefix(self) -> str:
        return self.secret[:_PREFIX_LENGTH]


def seed_keys(names: Sequence[str], seed: int) -> list[SeededKey]:
    rng = random.Random(f"keysync-bench:{seed}")
    prefixes: set[str] = set()
    keys = []
    for i, name in enumerate(names):
        secret = "".join(rng.choices(_ALPHANUMERIC, k=_SECRET_LENGTH))
        while secret[:_PREFIX_LENGTH] in prefixes:  # the server keeps prefixes unique
            secret = "".join(rng.choices(_ALPHANUMERIC, k=_SECRET_LENGTH))
        prefixes.add(secret[:_PREFIX_LENGTH])
        moment = _EPOCH + timedelta(seconds=i, microseconds=rng.randrange(1, 999_999))
        created = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
        key_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        keys.append(SeededKey(name, key_id, secret, created))
    return keys


def write_state(path: Path, keys: Sequence[SeededKey]) -> None:
    items = [
        {
            "id": key.id,
            "name": key.name,
            "key_prefix": key.key_prefix,
            "hashed_secret": hashlib.sha256(key.secret.encode()).hexdigest(),
            "created_at": key.created_at,
            "last_used_at": None,
        }
        for key in keys
    ]
    path.write_text(json.dumps({"version": 1, "keys": items}), encoding="utf-8")


def write_sink(path: Path, url: str, keys: Sequence[SeededKey]) -> None:
    records = {
        key.name: {
            "name": key.name,
            "key": key.secret,
            "id": key.id,
            "key_prefix": key.key_prefix,
            "created_at": key.created_at,
            "coderd_url": url,
        }
        for key in keys
    }
    document = {"version": 1, "coderd_url": url, "keys": records}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
