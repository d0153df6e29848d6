"""`watch --leader-elect`: several replicas, one reconciling. The sink's lock (a Kubernetes Lease,
the vault sink's KV entry) is held across rounds by the leader and renewed from a thread; the
others stand by, healthy, and try again at a fraction of the lease duration. A leader that cannot
renew in time stops starting actions before its lease can expire for anyone else; SIGTERM
releases it for a standby."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from keysync.engine.metrics import WatchMetrics
from keysync.engine.session import Session
from keysync.engine.watch import EventLog
from keysync.errors import KeysyncError, UsageError


class SharedLock(Protocol):
    duration: float
    identity: str

    def holder(self) -> str: ...

    def try_hold(self) -> bool: ...

    def release(self) -> None: ...


class Leadership:
    def __init__(
        self,
        session: Session,
        duration: float,
        log: EventLog,
        metrics: WatchMetrics | None,
        audit_path: Path | None,
    ) -> None:
        make: Callable[[float, Callable[[], None]], SharedLock] | None = getattr(
            session.sink, "leader_lock", None
        )
        if make is None:
            raise UsageError(
                f"--leader-elect needs a sink whose lock replicas on several hosts share (kubernetes, "
                f"vault); {session.sink.describe()} has none"
            )
        self._session = session
        self._log = log
        self._metrics = metrics
        self._audit_path = audit_path
        self.lost = threading.Event()  # set by the renewing thread the moment the lease is lost
        self.on_lost: Callable[[], None] = lambda: None
        self._lock = make(duration, self._lose)
        self.is_leader: bool | None = None  # None until the first attempt

    @property
    def retry_seconds(self) -> float:
        return max(0.2, self._lock.duration / 5)

    def leading(self) -> bool:
        """Tries to take (or keeps) the lock; whether this replica leads for the next round."""
        seen = True
        try:
            leads = self._lock.try_hold()
        except KeysyncError as exc:
            self._log.emit("leadership", state="error", error=str(exc).splitlines()[0])
            leads, seen = False, False
        if leads:
            self.lost.clear()
        if leads != self.is_leader:
            self._changed("leader" if leads else "standby")
        self.is_leader = leads
        if self._metrics is not None:
            self._metrics.observe_leadership(leads, healthy=seen)
        return leads

    def _lose(self) -> None:
        self.lost.set()
        self.on_lost()

    def release(self) -> None:
        if self.is_leader:
            try:
                self._lock.release()
            except KeysyncError as exc:
                self._log.emit("leadership", state="error", error=str(exc).splitlines()[0])
                return
            self._changed("released")
            self.is_leader = False
        self._session.close()

    def _changed(self, state: str) -> None:
        holder = self._lock.identity if state == "leader" else self._lock.holder()
        self._log.emit("leadership", state=state, identity=self._lock.identity, holder=holder)
        if self._audit_path is not None:
            from keysync.engine.audit import AuditLog

            audit = AuditLog(self._audit_path)
            try:
                audit.event("leadership", state=state, identity=self._lock.identity, holder=holder)
            finally:
                audit.close()
