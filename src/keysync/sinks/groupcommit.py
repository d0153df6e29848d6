"""Group commit: concurrent updates to one document made durable by one flush."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from keysync.errors import SinkError

Snapshot = TypeVar("Snapshot")


class _Batch:
    """The updates one flush makes durable; each waiter wakes once, when its batch is done."""

    def __init__(self) -> None:
        self.members = 0
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommit(Generic[Snapshot]):
    """Makes concurrent updates durable together: one flush covers every update made before it.

    `commit(update)` applies `update` under the lock and returns once a flush that started after
    it has succeeded. A flusher thread writes one batch at a time, so N threads finishing together
    pay for about one fsync, not N, and each of them wakes exactly once. `close()` ends that
    thread (a later commit starts another): a sink opened every watch round must not leave a
    thread behind, holding that round's records.
    """

    def __init__(
        self, snapshot: Callable[[], Snapshot], flush: Callable[[Snapshot], None], linger: float = 0.002
    ) -> None:
        self._snapshot = snapshot
        self._flush = flush
        self._linger = linger
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._open = _Batch()
        self._last_size = 0
        self._flusher: threading.Thread | None = None
        self._closing = False

    def commit(self, update: Callable[[], None]) -> None:
        with self._lock:
            update()
            batch = self._open
            batch.members += 1
            if self._flusher is None:
                self._closing = False
                self._flusher = threading.Thread(target=self._run, name="keysync-sink-flush", daemon=True)
                self._flusher.start()
            self._wanted.notify()
        batch.done.wait()
        if batch.error is not None:
            error = batch.error
            raise SinkError(str(error) if isinstance(error, SinkError) else f"sink write failed: {error}")

    def mutate(self, update: Callable[[], None]) -> None:
        """Applies update under the lock the flusher reads with, without flushing (a rollback)."""
        with self._lock:
            update()

    def close(self) -> None:
        """Flushes what is pending, then ends the flusher thread."""
        with self._lock:
            flusher = self._flusher
            self._closing = True
            self._wanted.notify()
        if flusher is not None:
            flusher.join()

    def _run(self) -> None:
        while self._wait_for_work():
            # When updates come together, a moment's wait lets more of them share this flush: the
            # document is rewritten whole, so fewer, larger batches keep a big apply linear.
            if self._last_size > 1:
                time.sleep(self._linger)
            self._flush_batch()

    def _wait_for_work(self) -> bool:
        """True when a batch waits; False (the thread is done) once closed with none pending."""
        with self._lock:
            while not self._open.members and not self._closing:
                self._wanted.wait()
            if not self._open.members:
                self._flusher = None
                return False
            return True

    def _flush_batch(self) -> None:
        with self._lock:
            batch, self._open = self._open, _Batch()
            self._last_size = batch.members
            try:
                data = self._snapshot()
            except BaseException as exc:
                batch.error = exc
        if batch.error is None:
            try:
                self._flush(data)
            except BaseException as exc:
                batch.error = exc
            del data  # the snapshot holds secrets: not a moment longer than the flush
        batch.done.set()
