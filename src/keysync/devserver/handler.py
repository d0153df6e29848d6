"""The http.server side: turn bytes into a Request, a Response back into bytes."""

from __future__ import annotations

import socket
import time
from contextlib import suppress
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keysync.devserver import messages
from keysync.devserver.bodies import BodyError, read_body
from keysync.devserver.exchange import Request, Response, json_response

if TYPE_CHECKING:
    from keysync.devserver.httpd import DevHTTPServer


class DevRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections as with Coder
    server_version = "keysync-devserver"
    sys_version = ""
    # Error pages (send_error) go out in two writes; without this, Nagle holds the second one back.
    disable_nagle_algorithm = True
    server: DevHTTPServer
    _arrived = 0.0

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def parse_request(self) -> bool:
        self._arrived = time.perf_counter()  # the request line is in; the latency counts from here
        return super().parse_request()

    def do_GET(self) -> None:
        self._exchange()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _exchange(self) -> None:
        started = self._arrived
        target = urlsplit(self.path)
        path = target.path
        try:
            body = read_body(self.headers, self.rfile)
        except BodyError as exc:
            self.send_error(exc.status, str(exc))
            self.server.log.request(self.command, path, str(exc.status), 0.0)
            return
        # Like a server latency/2 away each way: the change lands halfway, the answer leaves once the
        # whole latency has passed since arrival, whatever the handling took.
        self.server.wait_until(started, 0.5)
        response = self._respond(self._request(path, target.query, body))
        self.server.wait_until(started, 1.0)
        # Logged before the answer goes out: once a client has its answer, the line is written.
        outcome = "dropped" if response.drop else str(response.status)
        self.server.log.request(self.command, path, outcome, time.perf_counter() - started)
        if response.drop:
            self._drop()
            return
        self._send(response)
        if response.takeover is not None:
            self.close_connection = True  # after the upgrade, the connection is no longer HTTP
            response.takeover(self.connection, self.rfile)

    def _respond(self, request: Request) -> Response:
        try:
            return self.server.api.handle(request)
        except Exception as exc:  # a bug; answer as Go's recoverer would, and keep serving
            self.server.log.line(f"internal error: {type(exc).__name__}")
            return json_response(500, messages.internal_error(type(exc).__name__))

    def _request(self, path: str, query: str, body: bytes) -> Request:
        first: dict[str, str] = {}
        repeated: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            first.setdefault(name.lower(), value)  # Go's Header.Get reads the first value
            repeated.setdefault(name.lower(), []).append(value)
        every = {name: tuple(values) for name, values in repeated.items()}
        return Request(
            self.command, path, first, body, str(self.client_address[0]), query, self.request_version, every
        )

    def _send(self, response: Response) -> None:
        """The status line, headers and body in one write, as Go's buffered writer sends them."""
        phrase = self.responses.get(response.status, ("",))[0]
        head = [
            f"{self.protocol_version} {response.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        if response.status not in (101, 204):  # RFC 9110: no Content-Length on 1xx and 204
            head.append(f"Content-Length: {len(response.body)}")
        if self.close_connection and "Connection" not in response.headers:
            head.append("Connection: close")
        body = response.body if self.command != "HEAD" else b""
        self.wfile.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)

    def _drop(self) -> None:
        # The create is committed; the client sees the peer close with no answer at all.
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_exchange` logs its own line, without the query string."""

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.line(format % args)
