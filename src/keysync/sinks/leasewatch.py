"""A lock held on a lease, kept from two threads: one renews every third of the lease (sooner
after a failure, so a brief outage costs no leadership), the other gives up once two thirds of it
have passed since the START of the last renewal that succeeded, however long a request stuck on
the network takes. Whoever might take the lock over saw that renewal only after it was sent, and
waits a whole lease from then: the holder has stopped before anyone can take over."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from keysync.errors import SinkError

log = logging.getLogger("keysync")

# Renewals per lease while they fail: one fast failure still leaves a retry before the deadline.
_RETRIES_PER_LEASE = 6


class Keeper:
    """Calls `renew` (True: kept; False: another holder took it over; an exception: a failure
    the next attempt retries) until stopped or lost; `lost` is set, and `on_lost` called once,
    at two thirds of the lease without a renewal, or at once when another holder took it."""

    def __init__(
        self,
        what: str,
        renew: Callable[[], bool],
        duration: float,
        on_lost: Callable[[], None] = lambda: None,
        *,
        renewed_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what  # "the Lease ns/name", "the vault lock path": named in the log
        self.lost = threading.Event()
        self._renew_once = renew
        self._duration = duration
        self._on_lost = on_lost
        self._clock = clock
        self._renewed_at = renewed_at
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._why = ""  # why it was lost, once it is
        self._threads = [
            threading.Thread(target=self._renew, name="keysync-lease-renew", daemon=True),
            threading.Thread(target=self._watch, name="keysync-lease-watch", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stops renewing; a request still on the network is waited for up to one lease."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(1.0, self._duration))

    def _renew(self) -> None:
        pause = self._duration / 3
        while not self._stop.wait(pause) and not self.lost.is_set():
            started = self._clock()
            try:
                kept = self._renew_once()
            except Exception as exc:  # a failed renewal is news, not a crash: the watch judges it
                log.warning("cannot renew %s: %s", self.what, exc)
                pause = self._duration / _RETRIES_PER_LEASE
                continue
            if not kept:
                self._lose("another holder took it over")
                return
            self._renewed_at, pause = started, self._duration / 3

    def _watch(self) -> None:
        while True:
            left = self._renewed_at + self._duration * 2 / 3 - self._clock()
            if left <= 0:
                self._lose("it could not be renewed in time")
                return
            if self._stop.wait(left):
                return

    def raise_if_lost(self, lock: str) -> None:
        """A sink's write while it holds `lock` (named for the message): once the lock is lost,
        another holder may have it, so the write fails, and with it the apply stops starting more."""
        if self.lost.is_set():
            raise SinkError(f"{lock} was lost ({self._why}): stopping rather than racing another apply")

    def _lose(self, why: str) -> None:
        with self._guard:
            if self.lost.is_set() or self._stop.is_set():
                return
            self._why = why
            self.lost.set()
        log.warning("lost %s: %s", self.what, why)
        self._on_lost()
