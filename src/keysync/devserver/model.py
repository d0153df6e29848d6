"""A key as the server stores it: the secret's hash, never the secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class StoredKey:
    id: str
    name: str
    key_prefix: str
    hashed_secret: str
    created_at: datetime
    last_seen_at: datetime | None = None  # the last heartbeat of a replica using it
