"""keysync.transport: answers bounded after decoding and in nesting, a deadline for a whole
request and an interrupt that ends one, on real sockets on loopback."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest

from keysync.transport import deadline as deadlines
from keysync.transport.answers import MAX_NESTING, AnswerError, parse_json, read_body
from keysync.transport.deadline import bounded_transport, clear_interrupt, deadline, interrupt_requests, pause

BODY = b'[{"name": "alpha"}]'


def streamed(body: bytes, encoding: str = "") -> httpx.Response:
    headers = {"Content-Encoding": encoding} if encoding else {}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


def deflate(data: bytes, raw: bool = False) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (BODY, ""),
        (BODY, "identity"),
        (gzip.compress(BODY), "gzip"),
        (gzip.compress(BODY), "x-gzip"),
        (deflate(BODY), "deflate"),
        (deflate(BODY, raw=True), "deflate"),
        (gzip.compress(gzip.compress(BODY)), "gzip, gzip"),
        (gzip.compress(deflate(BODY)), "deflate, gzip"),
    ],
    ids=["plain", "identity", "gzip", "x-gzip", "deflate", "raw-deflate", "gzip-gzip", "deflate-gzip"],
)
def test_a_body_is_decoded_whatever_the_coding(encoded: bytes, encoding: str) -> None:
    assert read_body(streamed(encoded, encoding), 1 << 20) == BODY


def test_a_bomb_is_cut_off_after_decoding_with_little_memory_spent() -> None:
    # 1 GiB of spaces gzipped twice; reading stops just past the limit.
    spaces = b" " * (1 << 20)
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = inner.compress(spaces) + inner.flush(zlib.Z_FULL_FLUSH)  # with the gzip header
    block = inner.compress(spaces) + inner.flush(zlib.Z_FULL_FLUSH)
    bomb = gzip.compress(head + block * 1023)
    with pytest.raises(AnswerError, match="more than 1 MiB once decompressed"):
        read_body(streamed(bomb, "gzip, gzip"), 1 << 20)


@pytest.mark.parametrize(
    ("encoded", "encoding", "said"),
    [
        (BODY, "br", "did not ask for"),
        (BODY, "gzip, gzip, gzip, gzip", "encoded 4 times"),
        (b"not gzip at all", "gzip", "not valid gzip"),
        (gzip.compress(BODY)[:-12], "gzip", "truncated"),
    ],
    ids=["unknown", "too-many-layers", "not-gzip", "truncated"],
)
def test_a_body_that_cannot_be_decoded_is_one_clear_error(encoded: bytes, encoding: str, said: str) -> None:
    with pytest.raises(AnswerError, match=said):
        read_body(streamed(encoded, encoding), 1 << 20)


def test_a_plain_body_over_the_limit_is_refused() -> None:
    with pytest.raises(AnswerError, match="more than 16 bytes"):
        read_body(streamed(b"x" * 17), 16)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
def test_json_nested_too_deep_is_an_answer_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(AnswerError, match="nested deeper"):
        parse_json(b"[" * depth + b"]" * depth)


def test_json_within_bounds_and_invalid_json() -> None:
    assert parse_json(b"[" * 50 + b"]" * 50) is not None
    with pytest.raises(AnswerError, match="invalid JSON"):
        parse_json(b'{"message": ')


# A deadline for the whole request, on a real socket


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that answers with its status line, one byte every 0.1 s, forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    def drip(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                while not stop.is_set():
                    connection.sendall(b"H")
                    time.sleep(0.1)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def get(url: str, per_read_timeout: float = 5.0) -> None:
    transport = bounded_transport(httpx.HTTPTransport())
    try:
        request = httpx.Request("GET", url, extensions={"timeout": httpx.Timeout(per_read_timeout).as_dict()})
        transport.handle_request(request).read()
    finally:
        transport.close()


def test_a_deadline_ends_a_request_whose_bytes_trickle_in(trickler: str) -> None:
    # No read waits 5 s, so httpx alone would wait forever.
    with deadline(0.5), pytest.raises(httpx.ReadTimeout, match="longer than its timeout"):
        get(trickler)


def test_an_interrupt_ends_a_request_after_its_grace(trickler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines, "INTERRUPT_GRACE", 0.3)
    timer = threading.Timer(0.2, interrupt_requests)
    timer.start()
    try:
        with deadline(60), pytest.raises(httpx.ReadTimeout, match="interrupted"):
            get(trickler)
    finally:
        timer.cancel()
        clear_interrupt()


def test_an_interrupt_ends_a_pause_at_once() -> None:
    threading.Timer(0.1, interrupt_requests).start()
    try:
        pause(60)  # returns when interrupted; a test that hangs here has failed
        assert deadlines.requests_interrupted()
    finally:
        clear_interrupt()


def test_a_transport_without_a_network_is_left_as_it_is() -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    assert bounded_transport(mock) is mock
