"""One deadline for a whole request, and an interrupt that ends requests stuck on the network.

httpx's timeouts bound each socket operation: a server that sends one byte every two seconds
never trips a 30-second read timeout. Here every connect, TLS handshake, read and write is given
at most what is left of the request's deadline (a thread-local, set with `deadline(seconds)`),
and reads wait in short slices so that `interrupt_requests()` (a signal handler's call) ends
them within a grace period.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

INTERRUPT_GRACE = 2.0  # seconds an interrupted request may still take to finish normally
_SLICE = 0.2  # how often a waiting read looks at the clock and the interrupt

_local = threading.local()
_interrupt = threading.Lock()
_cut_at: float | None = None  # monotonic time after which no request may go on
_interrupted = threading.Event()  # wakes `pause`


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every network wait of this thread's request inside the block ends by `seconds` from now."""
    outer = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = outer


def interrupt_requests() -> None:
    """Requests in flight get `INTERRUPT_GRACE` seconds to finish, then end; a second call ends
    them now. Requests started afterwards end at once."""
    global _cut_at
    with _interrupt:
        now = time.monotonic()
        _cut_at = now if _cut_at is not None else now + INTERRUPT_GRACE
        _interrupted.set()


def requests_interrupted() -> bool:
    return _cut_at is not None


def clear_interrupt() -> None:
    """For a process that goes on after an interrupt was handled (and for tests)."""
    global _cut_at
    with _interrupt:
        _cut_at = None
        _interrupted.clear()


def pause(seconds: float) -> None:
    """Sleeps, unless requests are interrupted: a wait for a rate limit or a retry ends then."""
    _interrupted.wait(seconds)


def _left(timeout: float | None) -> float | None:
    """The time an operation may take: its own timeout, what is left of the deadline, and the
    interrupt's grace, whichever ends first; None for no bound at all."""
    ends = [time.monotonic() + timeout] if timeout is not None else []
    ends += [end for end in (getattr(_local, "deadline", None), _cut_at) if end is not None]
    return max(0.0, min(ends) - time.monotonic()) if ends else None


def _why_cut() -> str:
    return "interrupted" if _cut_at is not None else "the request took longer than its timeout"


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while True:
            left = _left(timeout)
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout(_why_cut())
            wait = _SLICE if left is None else min(left, _SLICE)
            started = time.monotonic()
            try:
                return self._inner.read(max_bytes, wait)
            except httpcore.ReadTimeout:
                if timeout is not None:
                    timeout -= time.monotonic() - started

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Not sliced: a write that times out part-way cannot be resumed.
        left = _left(timeout)
        if left is not None and left <= 0:
            raise httpcore.WriteTimeout(_why_cut())
        self._inner.write(buffer, left)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, _connect_time(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _connect_time(timeout: float | None) -> float | None:
    left = _left(timeout)
    if left is not None and left <= 0:
        raise httpcore.ConnectTimeout(_why_cut())
    return left


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _connect_time(timeout), local_address, socket_options)
        return _BoundedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.connect_unix_socket(path, _connect_time(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bounded_transport(transport: httpx.BaseTransport) -> httpx.BaseTransport:
    """The transport, its network I/O now held to the deadline and the interrupt. Transports
    that do no network I/O of their own (a test's mock) are returned as they are."""
    pool = getattr(transport, "_pool", None)  # httpx keeps its httpcore pool here
    backend = getattr(pool, "_network_backend", None)
    if backend is not None and not isinstance(backend, _BoundedBackend):
        pool._network_backend = _BoundedBackend(backend)  # type: ignore[union-attr]
    return transport


def bounded_client(client: httpx.Client) -> httpx.Client:
    """The client, every transport it may use (proxies included) bounded as above."""
    bounded_transport(client._transport)
    for mounted in client._mounts.values():
        if mounted is not None:
            bounded_transport(mounted)
    return client
