"""The vault sink's lock: one KV v2 entry beside the keys, so two applies writing the same path
prefix never run at once (Vault has no lock files).

The entry is taken and renewed with check-and-set, so of two writers racing for it exactly one
wins. It names its holder (process, host, since when) and carries an expiry that the holder
pushes forward while it runs: a holder that died leaves an entry that the next apply takes over
once it has expired. Released, it stays as a tombstone whose version the next writer sets on.
The entry also says how long its lease is (`lease_s`), for `watch --leader-elect`, which judges
expiry by watching the entry rather than by the holder's clock (vault_leader).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keysync.errors import LockHeldError
from keysync.sinks.leasewatch import Keeper

if TYPE_CHECKING:
    from keysync.sinks.vault import Reply, VaultApi

LOCK_LEAF = ".keysync-lock"  # no key name starts with a dot, so no key's path is ever the lock's
LEASE_SECONDS = 60.0
_POLL_SECONDS = 0.25
log = logging.getLogger("keysync")


class VaultLock:
    def __init__(
        self,
        api: VaultApi,
        data_path: str,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self.path = data_path
        self._lease = lease_seconds
        self._clock = clock
        self._owner = uuid.uuid4().hex
        self._version = 0
        self._since = ""

    @contextmanager
    def held(self, timeout: float | None) -> Iterator[Keeper]:
        """Held while the block runs, renewed every third of the lease; the keeper's `lost` is
        set at two thirds of a lease without a renewal, or once another apply took it over."""
        taken_at = self.acquire(timeout)
        keeper = Keeper(f"the vault lock {self.path}", self.renew, self._lease, renewed_at=taken_at)
        keeper.start()
        try:
            yield keeper
        finally:
            keeper.stop()
            self.release()

    def acquire(self, timeout: float | None) -> float:
        """Takes the lock; returns when (monotonic) the request that took it was sent."""
        deadline = time.monotonic() + (timeout or 0)
        while True:
            started = time.monotonic()
            holder = self._try_take()
            if holder is None:
                return started
            if time.monotonic() >= deadline:
                raise LockHeldError(self._held_message(holder, timeout))
            time.sleep(_POLL_SECONDS)

    @property
    def identity(self) -> str:
        return f"{os.getpid()}@{socket.gethostname()}"

    def renew(self) -> bool:
        """Pushes the expiry forward; False when another apply took the lock over meanwhile."""
        version = self._cas_write(self._version, self._holder_fields())
        if version is None:  # a renewal whose answer was lost leaves the entry ours, a version on
            current, fields = self.read()
            if fields is not None and self.mine(fields):
                version = self._cas_write(current, self._holder_fields())
        if version is None:
            log.warning("the vault lock %s was taken over by another apply while this one ran", self.path)
            return False
        self._version = version
        return True

    def release(self) -> None:
        if self._cas_write(self._version, {"released": True, "owner": self._owner}) is None:
            log.warning("the vault lock %s was taken over before this apply released it", self.path)

    def _try_take(self) -> dict[str, Any] | None:
        """None once the lock is ours; otherwise what its current holder wrote."""
        version, fields = self.read()
        if fields is not None and self._alive(fields):
            return fields
        if not self.take(version):  # another apply won the race
            return self.read()[1] or {}
        return None

    def take(self, version: int) -> bool:
        """Writes this process in as the holder, unless the entry changed since `version`."""
        self._since = datetime.now(UTC).isoformat(timespec="seconds")
        taken = self._cas_write(version, self._holder_fields())
        if taken is None:
            return False
        self._version = taken
        return True

    def mine(self, fields: dict[str, Any]) -> bool:
        return fields.get("owner") == self._owner and not fields.get("released")

    def held_by_another(self, fields: dict[str, Any]) -> bool:
        """Whoever wrote `fields` holds the lock, unless it expired (which the caller judges)."""
        return not fields.get("released") and fields.get("owner") != self._owner

    def _alive(self, fields: dict[str, Any]) -> bool:
        expires = fields.get("expires_at")
        return self.held_by_another(fields) and isinstance(expires, int | float) and expires > self._clock()

    def read(self) -> tuple[int, dict[str, Any] | None]:
        """The entry's current version (0 when there is none) and its fields (None when deleted)."""
        reply = self._api.call("GET", self.path, "reading the lock at", allow=(404,))
        metadata = reply.data.get("metadata")
        version = metadata.get("version") if isinstance(metadata, dict) else None
        fields = reply.data.get("data") if reply.status == 200 else None
        return (version if isinstance(version, int) else 0), (fields if isinstance(fields, dict) else None)

    def _cas_write(self, version: int, fields: dict[str, Any]) -> int | None:
        """The new version, or None when the entry changed since `version` (check-and-set)."""
        body = {"options": {"cas": version}, "data": fields}
        reply: Reply = self._api.call("POST", self.path, "writing the lock at", body=body, allow=(400,))
        if reply.status == 400:
            if any("check-and-set" in error for error in reply.errors):
                return None
            raise self._api.failure("writing the lock at", self.path, reply)
        new_version = reply.data.get("version")
        return new_version if isinstance(new_version, int) else version + 1

    def _holder_fields(self) -> dict[str, Any]:
        return {
            "owner": self._owner,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self._since,
            "expires_at": self._clock() + self._lease,
            "lease_s": self._lease,
        }

    def _held_message(self, holder: dict[str, Any], timeout: float | None) -> str:
        pid, host, since = (shown(holder.get(field)) for field in ("pid", "host", "since"))
        who = f"process {pid} on {host} since {since}" if holder.get("pid") else "another apply"
        waited = f" (waited {timeout:g}s)" if timeout else ""
        return (
            f"vault {self._api.address}: the sink lock {self.path} is held by {who}{waited}; "
            "wait for it to finish, or pass --lock-timeout DURATION to wait"
        )


def lease_of(fields: dict[str, Any]) -> float:
    """The lease its holder wrote into the entry; an entry without one, the apply's."""
    lease = fields.get("lease_s")
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < float("inf"):
        return LEASE_SECONDS
    return float(lease)


def shown(value: Any) -> str:
    """A field another apply wrote, fit for one line of an error message."""
    return "".join(c for c in str(value) if c.isprintable())[:64]
