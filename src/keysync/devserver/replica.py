"""A stand-in for one AI Gateway replica (`coder ai-gateway start`), for demos and tests.

    python -m keysync.devserver.replica --url URL --key-file PATH

Like the gateway it reads its key once, at start-up (whitespace trimmed), and never again: a new
key takes effect only when the replica restarts. It connects to `/api/v2/ai-gateway/serve` with
Coder's handshake, answers pings and holds the connection open; when the server drops it, it
reconnects, and it exits 1 when the server refuses its key (401) or the handshake (any other 4xx).
It prints `replica connected to URL` on stdout each time it is in; the key never appears anywhere.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO, TextIO
from urllib.parse import quote, urlsplit

from keysync.devserver.gateway import GATEWAY_KEY_HEADER
from keysync.devserver.handshake import server_version
from keysync.devserver.routes import SERVE_PATH
from keysync.devserver.wsframes import (
    CLOSE,
    NORMAL,
    PING,
    PONG,
    accept_token,
    close_payload,
    encode_frame,
    new_key,
    read_frame,
)

_MAX_HEAD = 64 * 1024
_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


class Refused(Exception):
    """The server answered the handshake with something other than 101."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}".strip())
        self.status = status


class _Stop(Exception):
    """SIGTERM or SIGINT: say goodbye and exit 0."""


@dataclass
class _Connection:
    sock: socket.socket
    reader: BinaryIO


class Replica:
    def __init__(self, url: str, key: str, version: str, out: TextIO, err: TextIO) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._version = version
        self._out = out
        self._err = err

    def run(self) -> int:
        """Stay connected until stopped (0) or refused (1)."""
        failures = 0
        while True:
            try:
                with self._connected() as connection:
                    failures = 0
                    self._say(self._out, f"replica connected to {self.url}")
                    why = self._hold(connection)
            except _Stop:
                return 0
            except Refused as exc:
                if exc.status < 500:
                    self._say(self._err, f"replica: {self.url} refused the connection: {exc}")
                    return 1
                why = f"answered {exc}"
            except OSError as exc:
                why = f"cannot connect: {exc.strerror or exc}"
            self._say(self._err, f"replica: {why}; reconnecting")
            time.sleep(_RETRY_DELAYS[min(failures, len(_RETRY_DELAYS) - 1)])
            failures += 1

    @contextmanager
    def _connected(self) -> Iterator[_Connection]:
        sock = _open(self.url)
        try:
            reader = sock.makefile("rb")
            challenge = new_key()
            sock.sendall(self._handshake(challenge))
            _expect_upgrade(reader, challenge)
            sock.settimeout(None)  # from here on, wait for the server as long as it takes
            connection = _Connection(sock, reader)
            try:
                yield connection
            except _Stop:
                with suppress(OSError):
                    sock.sendall(encode_frame(CLOSE, close_payload(NORMAL), mask=True))
                raise
        finally:
            sock.close()

    def _handshake(self, challenge: str) -> bytes:
        target = urlsplit(self.url)
        lines = [
            f"GET {target.path}{SERVE_PATH}?version={quote(self._version)} HTTP/1.1",
            f"Host: {target.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {challenge}",
            "Sec-WebSocket-Version: 13",
            f"{GATEWAY_KEY_HEADER}: {self._key}",
            "User-Agent: keysync-replica",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _hold(self, connection: _Connection) -> str:
        """Answer the server until it goes; the reason it went."""
        try:
            while (frame := read_frame(connection.reader)) is not None:
                if frame.opcode == PING:
                    connection.sock.sendall(encode_frame(PONG, frame.payload, mask=True))
                elif frame.opcode == CLOSE:
                    with suppress(OSError):
                        connection.sock.sendall(encode_frame(CLOSE, frame.payload[:2], mask=True))
                    return "the server closed the connection"
        except (EOFError, OSError):
            pass
        return "the server dropped the connection"

    def _say(self, stream: TextIO, line: str) -> None:
        stream.write(line + "\n")
        stream.flush()


def _open(url: str) -> socket.socket:
    target = urlsplit(url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise Refused(0, f"not an http(s) URL: {url}")
    port = target.port or (443 if target.scheme == "https" else 80)
    sock = socket.create_connection((target.hostname, port), timeout=10)
    if target.scheme == "https":
        return ssl.create_default_context().wrap_socket(sock, server_hostname=target.hostname)
    return sock


def _expect_upgrade(reader: BinaryIO, challenge: str) -> None:
    status, headers = _read_head(reader)
    if status != 101:
        raise Refused(status, _message(reader, headers))
    if headers.get("sec-websocket-accept") != accept_token(challenge):
        raise Refused(status, "the server's Sec-WebSocket-Accept does not answer our key")


def _read_head(reader: BinaryIO) -> tuple[int, dict[str, str]]:
    status_line = reader.readline(_MAX_HEAD).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {status_line.strip()[:80]!r}")
    headers: dict[str, str] = {}
    while (line := reader.readline(_MAX_HEAD).decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _message(reader: BinaryIO, headers: dict[str, str]) -> str:
    length = min(int(headers.get("content-length", "0") or 0), _MAX_HEAD)
    body = reader.read(length).decode("utf-8", errors="replace")
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.strip().splitlines()[0] if body.strip() else ""
    return str(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keysync.devserver.replica", description=__doc__)
    parser.add_argument("--url", required=True, help="the Coder URL, e.g. http://127.0.0.1:7080")
    parser.add_argument("--key-file", required=True, type=Path, help="the file holding the gateway key")
    parser.add_argument("--version", default=server_version(), help="the gateway protocol version sent")
    args = parser.parse_args(argv)
    try:
        key = args.key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        print(f"replica: cannot read key file {args.key_file}: {reason}", file=sys.stderr)
        return 1
    if not key:
        print(f"replica: key file {args.key_file} is empty", file=sys.stderr)
        return 1
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _stop)
    try:
        return Replica(args.url, key, args.version, sys.stdout, sys.stderr).run()
    except _Stop:
        return 0


def _stop(_number: int, _frame: FrameType | None) -> None:
    raise _Stop


if __name__ == "__main__":
    sys.exit(main())
