"""RFC 6455 WebSocket frames, read and written by either end, without extensions.

Enough for a gateway replica's connection: data frames are carried but not interpreted, control
frames (ping, pong, close) are what the dev server and the replica actually speak.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Protocol

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = frozenset({CLOSE, PING, PONG})
KNOWN = frozenset({CONTINUATION, TEXT, BINARY, *CONTROL})
MAX_PAYLOAD = 1 << 22  # Coder lets a gateway's messages reach 4 MiB
NORMAL, GOING_AWAY, PROTOCOL_ERROR, TOO_BIG = 1000, 1001, 1002, 1009


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class FrameError(Exception):
    """The peer broke the protocol; `code` is the close code that says how."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    masked: bool


def accept_token(key: str) -> str:
    """The Sec-WebSocket-Accept answering a Sec-WebSocket-Key."""
    digest = hashlib.sha1(key.encode("ascii") + ACCEPT_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def read_frame(stream: Readable) -> Frame | None:
    """The next frame, or None when the peer closed the stream between frames."""
    head = _read_exact(stream, 2, allow_eof=True)
    if head is None:
        return None
    fin, opcode, masked, length = bool(head[0] & 0x80), head[0] & 0x0F, bool(head[1] & 0x80), head[1] & 0x7F
    if head[0] & 0x70 or opcode not in KNOWN:
        raise FrameError(PROTOCOL_ERROR, "reserved bits or opcode used")
    if length >= 126:
        size = 2 if length == 126 else 8
        length = int.from_bytes(_read_exact(stream, size) or b"", "big")
    if opcode in CONTROL and (length > 125 or not fin):
        raise FrameError(PROTOCOL_ERROR, "control frame fragmented or too long")
    if length > MAX_PAYLOAD:
        raise FrameError(TOO_BIG, "message too big")
    mask = _read_exact(stream, 4) if masked else None
    payload = _read_exact(stream, length) or b""
    return Frame(fin, opcode, _unmask(payload, mask) if mask else payload, masked)


def encode_frame(opcode: int, payload: bytes = b"", *, mask: bool) -> bytes:
    """One final frame; a client masks what it sends, a server must not."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, (0x80 if mask else 0) | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, (0x80 if mask else 0) | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, (0x80 if mask else 0) | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _unmask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def _unmask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def _read_exact(stream: Readable, size: int, *, allow_eof: bool = False) -> bytes | None:
    chunks, wanted = [], size
    while wanted:
        chunk = stream.read(wanted)
        if not chunk:
            if allow_eof and wanted == size:
                return None
            raise EOFError("the peer closed the connection inside a frame")
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)
