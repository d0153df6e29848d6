"""The vault sink's KV lock held across the rounds of `watch --leader-elect`.

Expiry is judged as client-go judges a Lease: a candidate takes the entry over once it has seen
no new version of it for the lease its holder wrote, timed on the candidate's own monotonic clock
from when it first saw that version. No two hosts' wall clocks are compared (`expires_at` is
still written, for a one-shot apply, which cannot watch the entry for a whole lease).

The leader keeps it as `leasewatch.Keeper` keeps any lease: renewed every third of it, given up
once two thirds have passed since the start of the last renewal that succeeded, however long a
request stuck on the network takes. No two leaders, even for a moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keysync.sinks.leasewatch import Keeper
from keysync.sinks.vault_lock import VaultLock, lease_of, shown


class Observed:
    """When this process first saw the entry's current version."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._since = 0.0

    def unchanged_for(self, version: int, now: float) -> float:
        if version != self._version:
            self._version, self._since = version, now
        return now - self._since


class VaultLeaderLock:
    """What `Leadership` holds: `try_hold` takes the entry when it is free or expired and keeps it
    renewed until released or lost (`on_lost` is called at once then)."""

    def __init__(
        self,
        lock: VaultLock,
        duration: float,
        on_lost: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self.duration = duration
        self.identity = lock.identity
        self._on_lost = on_lost
        self._observed = Observed()
        self._last: dict[str, Any] | None = None
        self._keeper: Keeper | None = None

    def holder(self) -> str:
        fields = self._last
        if fields is None or not self._lock.held_by_another(fields):
            return "nobody"
        pid, host, since = (shown(fields.get(field)) for field in ("pid", "host", "since"))
        return f"{pid}@{host} since {since}"

    def try_hold(self) -> bool:
        if self._keeper is not None and not self._keeper.lost.is_set():
            return True
        self._stop_keeping()
        started = self._clock()
        version, fields = self._lock.read()
        self._last = fields
        if self._unexpired(version, fields, started):
            return False
        if not self._lock.take(version):  # another candidate wrote first: it leads now
            self._last = self._lock.read()[1]
            return False
        self._keeper = Keeper(
            f"the vault lock {self._lock.path}",
            self._lock.renew,
            self.duration,
            self._on_lost,
            renewed_at=started,
            clock=self._clock,
        )
        self._keeper.start()
        return True

    def _unexpired(self, version: int, fields: dict[str, Any] | None, now: float) -> bool:
        """Another's entry whose version this process has not yet seen unchanged for its lease."""
        if fields is None or not self._lock.held_by_another(fields):
            return False
        return self._observed.unchanged_for(version, now) < lease_of(fields)

    def release(self) -> None:
        """Marks the entry released, so that a standby takes over at once rather than after expiry."""
        self._stop_keeping()
        self._lock.release()
        self._last = None

    def _stop_keeping(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
