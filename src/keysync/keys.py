"""What Coder reports about a key, and what a sink holds for one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from keysync.secret import Secret

IN_USE_WINDOW_SECONDS = 600


class LiveKey(BaseModel):
    """A key as the list endpoint shows it; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str
    name: str
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    last_heartbeat_at: datetime | None = None

    @property
    def last_seen(self) -> datetime | None:
        seen = [t for t in (self.last_used_at, self.last_heartbeat_at) if t is not None]
        return max(seen) if seen else None

    def in_use(self, now: datetime) -> bool:
        seen = self.last_seen
        return seen is not None and (now - seen).total_seconds() < IN_USE_WINDOW_SECONDS


@dataclass(frozen=True)
class CreatedKey:
    """A key just created: the only moment its secret is known."""

    live: LiveKey
    secret: Secret


@dataclass(frozen=True)
class SecretRecord:
    """What a sink stores per key name."""

    name: str
    key: Secret
    id: str
    key_prefix: str
    created_at: str
    coderd_url: str
    live_name: str = ""

    def public(self) -> dict[str, str]:
        fields = {
            "name": self.name,
            "id": self.id,
            "key_prefix": self.key_prefix,
            "created_at": self.created_at,
            "coderd_url": self.coderd_url,
        }
        if self.live_name and self.live_name != self.name:
            fields["live_name"] = self.live_name  # a rotation generation: `name-rK`
        return fields

    def document(self) -> dict[str, str]:
        """The full record, secret included: only for writing into a sink."""
        return {**self.public(), "key": self.key.reveal()}

    @classmethod
    def for_created(cls, created: CreatedKey, coderd_url: str, name: str = "") -> SecretRecord:
        """The record of a created key, stored under the manifest's `name` (default: its own)."""
        live = created.live
        return cls(
            name=name or live.name,
            live_name=live.name,
            key=created.secret,
            id=live.id,
            key_prefix=live.key_prefix,
            created_at=live.created_at.isoformat().replace("+00:00", "Z"),
            coderd_url=coderd_url,
        )


@dataclass(frozen=True)
class StoredEntry:
    """What plan needs to know of a sink record: never the secret, only its first 11 characters,
    which Coder itself shows as the key prefix."""

    name: str
    id: str
    key_prefix: str
    secret_prefix: str
    coderd_url: str

    @classmethod
    def of(cls, record: SecretRecord) -> StoredEntry:
        return cls(
            name=record.name,
            id=record.id,
            key_prefix=record.key_prefix,
            secret_prefix=record.key.reveal()[:11],
            coderd_url=record.coderd_url,
        )


@dataclass(frozen=True)
class SinkView:
    """The sink's contents as plan sees them; `readable` is False for sinks that cannot be read
    back (exec), whose entries are then unknown. Such a sink may still know, per name, the id of
    the key whose delivery it last confirmed (`delivered`, "" when none was): a name it lists is
    held only by that key; a name it does not list is assumed held by its newest key."""

    entries: dict[str, StoredEntry]
    readable: bool = True
    delivered: Mapping[str, str] = field(default_factory=dict)
