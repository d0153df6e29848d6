"""The sink's lock as a coordination.k8s.io/v1 Lease, taken and kept as client-go's leader
election does: by create, or by an update carrying the resourceVersion once the holder has not
renewed for leaseDurationSeconds *as this process observed it* (timed from when it last saw the
record change, so clock skew between hosts does not matter); released by clearing the holder."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keysync.errors import LockHeldError
from keysync.sinks.kubernetes.api import KubeApi
from keysync.sinks.leasewatch import Keeper

DEFAULT_DURATION = 15.0
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def lease_name(coderd_url: str, secret_template: str) -> str:
    """keysync- and a short hash: one lock per Coder deployment and Secret naming."""
    digest = hashlib.sha256(f"{coderd_url}\n{secret_template}".encode()).hexdigest()[:10]
    return f"keysync-{digest}"


def identity() -> str:
    """holderIdentity: this process and its host (in a pod, the pod's name)."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).strftime(_MICRO)


@dataclass(frozen=True)
class Record:
    holder: str
    duration: float
    acquired: str
    renewed: str
    transitions: int
    version: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Record:
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or DEFAULT_DURATION),
            acquired=str(spec.get("acquireTime") or ""),
            renewed=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
        )


class Lease:
    def __init__(self, api: KubeApi, namespace: str, name: str, duration: float = DEFAULT_DURATION) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity()
        self.duration = duration
        self.last: Record | None = None  # as last read or written
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self.renewed_at = 0.0  # monotonic time of the last successful acquire or renewal

    @property
    def _budget(self) -> float:
        """How long one request may take: a renewal stuck on the network must not outlast the
        time left to notice the lease is lost."""
        return max(0.5, self.duration / 3)

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def try_acquire(self) -> bool:
        """Takes or renews the lease; False while another holder's lease has not expired."""
        started = time.monotonic()
        reply = self._api.call(
            "GET", self.path, f"reading the Lease {self.where}", allow=(404,), within=self._budget
        )
        if reply.status == 404:
            return self._write("POST", self._body(None), started)
        record = Record.of(reply.body)
        self.last = record
        key = (record.holder, record.renewed, record.version)
        if key != self._observed:
            self._observed, self._observed_at = key, started
        if record.holder and record.holder != self.identity and started < self._observed_at + record.duration:
            return False
        return self._write("PUT", self._body(record), started)

    def release(self) -> None:
        """Clears the holder, so that a standby takes over at once rather than after expiry."""
        record = self.last
        if record is None or record.holder != self.identity:
            return
        spec = {
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "acquireTime": _now(),
            "renewTime": _now(),
            "leaseTransitions": record.transitions,
        }
        body = self._object(spec, record.version)
        reply = self._api.call(
            "PUT", self.path, f"releasing the Lease {self.where}", body=body, allow=(404, 409)
        )
        if reply.status == 200:
            self.last = Record.of(reply.body)
        self.renewed_at = 0.0

    def held_message(self, waited: float | None) -> str:
        record = self.last
        who = (
            f"{record.holder} since {record.acquired} (last renewed {record.renewed})"
            if record
            else "another"
        )
        wait = f" (waited {waited:g}s)" if waited else ""
        duration = record.duration if record else self.duration
        return (
            f"the sink's lock, Lease {self.where}, is held by {who}{wait}; wait for it to finish, or pass "
            f"--lock-timeout DURATION to wait (a holder that is gone loses it {duration:g}s after its last "
            "renewal)"
        )

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _body(self, current: Record | None) -> dict[str, Any]:
        mine = current is not None and current.holder == self.identity
        now = _now()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": current.acquired if mine and current else now,
            "renewTime": now,
            "leaseTransitions": (current.transitions + (0 if mine else 1)) if current else 0,
        }
        return self._object(spec, current.version if current else "")

    def _object(self, spec: dict[str, Any], version: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version:
            metadata["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _write(self, method: str, body: dict[str, Any], started: float) -> bool:
        path = self.path if method == "PUT" else self.path.rsplit("/", 1)[0]
        reply = self._api.call(
            method, path, f"taking the Lease {self.where}", body=body, allow=(409,), within=self._budget
        )
        if reply.status == 409:  # another candidate wrote first: it holds the lease now
            return False
        self.last = Record.of(reply.body)
        self._observed = (self.last.holder, self.last.renewed, self.last.version)
        self._observed_at = started
        self.renewed_at = started
        return True


class Renewer(Keeper):
    """Renews a held lease from a thread; `lost` is set once two thirds of it passed since the
    start of its last successful renewal (even while a renewal is still stuck on the network),
    or at once when another holder took it: before the lease can expire for anyone else."""

    def __init__(self, lease: Lease, on_lost: Callable[[], None] = lambda: None) -> None:
        super().__init__(
            f"the Lease {lease.where}",
            lease.try_acquire,
            lease.duration,
            on_lost,
            renewed_at=lease.renewed_at,
        )


@contextmanager
def held(lease: Lease, timeout: float | None) -> Iterator[Renewer]:
    """The lease for the length of the block, renewed meanwhile; waits up to `timeout` for it."""
    deadline = time.monotonic() + (timeout or 0)
    while not lease.try_acquire():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockHeldError(lease.held_message(timeout))
        time.sleep(min(remaining, max(0.2, lease.duration / 8)))
    renewer = Renewer(lease)
    renewer.start()
    try:
        yield renewer
    finally:
        renewer.stop()
        lease.release()


class HeldLease:
    """A lease kept across the rounds of `watch --leader-elect`: `try_hold` takes it when it can
    and renews it from a thread until released or lost (`on_lost` is called at once then)."""

    def __init__(self, lease: Lease, on_lost: Callable[[], None]) -> None:
        self._lease = lease
        self._on_lost = on_lost
        self._renewer: Renewer | None = None

    @property
    def duration(self) -> float:
        return self._lease.duration

    @property
    def identity(self) -> str:
        return self._lease.identity

    def holder(self) -> str:
        record = self._lease.last
        return f"{record.holder} since {record.acquired}" if record and record.holder else "nobody"

    def try_hold(self) -> bool:
        if self._renewer is not None and not self._renewer.lost.is_set():
            return True
        self._stop_renewing()
        if not self._lease.try_acquire():
            return False
        self._renewer = Renewer(self._lease, self._on_lost)
        self._renewer.start()
        return True

    def release(self) -> None:
        self._stop_renewing()
        self._lease.release()

    def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
