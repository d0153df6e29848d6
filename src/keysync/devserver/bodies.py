"""Reading a request body as Content-Length or chunked framing says."""

from __future__ import annotations

from email.message import Message
from io import BufferedIOBase

MAX_BODY_BYTES = 1 << 20
_MAX_LINE = 65536


class BodyError(Exception):
    """The body is framed wrongly or too large; the status says which."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def read_body(headers: Message, stream: BufferedIOBase) -> bytes:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(stream)
    raw = headers.get("Content-Length")
    if raw is None:
        return b""
    if not raw.strip().isdigit():
        raise BodyError(400, "invalid Content-Length")
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise BodyError(413, "request body too large")
    return stream.read(length)


def _read_chunked(stream: BufferedIOBase) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while size := _chunk_size(stream.readline(_MAX_LINE)):
        total += size
        if total > MAX_BODY_BYTES:
            raise BodyError(413, "request body too large")
        chunks.append(stream.read(size))
        stream.readline(_MAX_LINE)  # the CRLF after each chunk
    while stream.readline(_MAX_LINE).strip():
        pass  # trailer fields, ignored
    return b"".join(chunks)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    try:
        size = int(text, 16)
    except ValueError:
        raise BodyError(400, "invalid chunk size") from None
    if size < 0:
        raise BodyError(400, "invalid chunk size")
    return size
