"""`GET /api/v2/ai-gateway/serve`: where a gateway replica connects with its key, as in Coder.

Checked in Coder's order: the key, the `version` query parameter, then the WebSocket upgrade. A
heartbeat is recorded at the upgrade and on every tick while the connection stays open; on a tick
that finds the key deleted, the connection is dropped, as Coder cancels its context (no close
frame), and the replica's reconnect then gets 401.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from io import BufferedIOBase

from keysync.devserver import messages
from keysync.devserver.exchange import Request, Response, json_response
from keysync.devserver.handshake import server_version, upgrade_refusal, version_problem
from keysync.devserver.store import KeyStore
from keysync.devserver.wsframes import (
    CLOSE,
    PING,
    PONG,
    PROTOCOL_ERROR,
    FrameError,
    accept_token,
    close_payload,
    encode_frame,
    read_frame,
)

GATEWAY_KEY_HEADER = "X-Coder-AI-Governance-Gateway-Key"


class Gateway:
    def __init__(self, store: KeyStore, heartbeat_interval: float) -> None:
        self._store = store
        self._interval = heartbeat_interval

    def serve(self, request: Request) -> Response:
        presented = request.header(GATEWAY_KEY_HEADER).strip()
        if not presented:
            return json_response(401, messages.GATEWAY_KEY_REQUIRED)
        key = self._store.find(presented)
        if key is None:
            return json_response(401, messages.GATEWAY_KEY_INVALID)
        sent = request.query_value("version")
        problem = version_problem(sent)
        if problem is not None:
            return json_response(400, messages.incompatible_version(problem, sent, server_version()))
        refusal = upgrade_refusal(request)
        if refusal is not None:
            return refusal
        # Recorded before the 101 leaves, so a replica that is in has been seen.
        self._store.heartbeat(key.id)
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Accept": accept_token(request.header("Sec-WebSocket-Key").strip()),
        }
        return Response(101, headers=headers, takeover=_Session(self._store, key.id, self._interval).run)


class _Session:
    """One replica's open connection: answers its pings and close, heartbeats on every tick."""

    def __init__(self, store: KeyStore, key_id: str, interval: float) -> None:
        self._store = store
        self._key_id = key_id
        self._interval = interval
        self._closed = threading.Event()
        self._write_lock = threading.Lock()
        self._connection: socket.socket | None = None

    def run(self, connection: socket.socket, reader: BufferedIOBase) -> None:
        self._connection = connection
        listener = threading.Thread(target=self._listen, args=(reader,), name="gateway-session", daemon=True)
        listener.start()
        try:
            while not self._closed.wait(self._interval):
                if not self._store.heartbeat(self._key_id):
                    break
        finally:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            listener.join(timeout=5)

    def _listen(self, reader: BufferedIOBase) -> None:
        try:
            while (frame := read_frame(reader)) is not None:
                if not frame.masked:
                    raise FrameError(PROTOCOL_ERROR, "received unmasked frame from client")
                if frame.opcode == PING:
                    self._send(encode_frame(PONG, frame.payload, mask=False))
                elif frame.opcode == CLOSE:
                    self._send(encode_frame(CLOSE, frame.payload[:2], mask=False))
                    return
                # Data frames carry the gateway's RPC traffic, which nothing here speaks.
        except FrameError as exc:
            self._send(encode_frame(CLOSE, close_payload(exc.code, str(exc)), mask=False))
        except (EOFError, OSError):
            pass
        finally:
            self._closed.set()

    def _send(self, frame: bytes) -> None:
        assert self._connection is not None
        with self._write_lock, suppress(OSError):
            self._connection.sendall(frame)
