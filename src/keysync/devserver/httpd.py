"""The threaded HTTP server: a deep listen backlog, daemon threads, and a stop that is immediate."""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import sys
import threading
import time
from http.server import ThreadingHTTPServer

from keysync.devserver.api import KeysApi
from keysync.devserver.handler import DevRequestHandler
from keysync.devserver.requestlog import RequestLog


class DevHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of many clients must queue, not be reset
    allow_reuse_address = True
    timeout = 0.5  # bounds handle_request's own wait should a ready connection vanish

    def __init__(self, address: tuple[str, int], api: KeysApi, latency_ms: int, log: RequestLog):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.log = log
        self._latency = latency_ms / 1000
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            super().__init__(address, DevRequestHandler)
        except BaseException:
            self._close_wakers()
            raise

    def serve(self) -> None:
        """Like serve_forever, but `request_stop` ends it at once rather than at the next poll."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = selector.select()
                if any(key.fileobj is self.socket for key, _ in ready) and not self._stopping.is_set():
                    self.handle_request()

    def request_stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._close_wakers()

    def _close_wakers(self) -> None:
        self._wake_reader.close()
        self._wake_writer.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def wait_until(self, arrived: float, share: float) -> None:
        """Sleeps until `share` of the latency has passed since the request arrived."""
        delay = arrived + self._latency * share - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise outlive the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # a client hanging up is no news
            self.log.line(f"connection error: {type(error).__name__}")
