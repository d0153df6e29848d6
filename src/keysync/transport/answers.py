"""An answer's body, bounded after decoding, and its JSON, bounded in nesting.

httpx decodes `Content-Encoding` a whole network chunk at a time, so 7 KB of `gzip, gzip` can
inflate to gigabytes before any size check sees it. Here the raw bytes are inflated in small
steps, layer by layer, and reading stops as soon as the decoded body passes its limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pydantic_core

_STEP = 64 << 10  # the most one inflating step may produce
_MAX_CODINGS = 3
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
MAX_NESTING = 201  # pydantic-core's parser refuses to go deeper; keysync's answers need 3 levels


class AnswerError(ValueError):
    """An answer that is too large, badly encoded or not JSON; the message says which."""


def read_body(response: httpx.Response, limit: int) -> bytes:
    """The whole body of a streamed response, decoded; AnswerError once it passes `limit` bytes."""
    if response.is_stream_consumed:  # built in memory (a test's transport): read already
        if len(response.content) > limit:
            raise AnswerError(f"sent more than {_size(limit)}")
        return response.content
    chunks: Iterable[bytes] = response.iter_raw()
    for coding in reversed(_codings(response)):
        chunks = _inflate(chunks, coding)
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            decoded = " once decompressed" if _codings(response) else ""
            raise AnswerError(f"sent more than {_size(limit)}{decoded}")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The JSON value of a body; AnswerError for anything else, including nesting deeper than
    MAX_NESTING (never a RecursionError)."""
    try:
        return pydantic_core.from_json(body)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise AnswerError(f"sent JSON nested deeper than {MAX_NESTING} levels") from None
        raise AnswerError(f"sent invalid JSON ({str(exc).splitlines()[0][:120]})") from None


def nesting_problem(error: str) -> bool:
    """Whether a JSON parser's message (pydantic's included) is about nesting too deep."""
    return "recursion limit" in error


def _codings(response: httpx.Response) -> list[str]:
    header = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip().lower() not in ("", "identity")]
    if len(codings) > _MAX_CODINGS:
        raise AnswerError(f"sent a body encoded {len(codings)} times over ({header[:80]!r})")
    unknown = next((c for c in codings if c not in _WBITS), None)
    if unknown is not None:
        raise AnswerError(f"sent a body in an encoding keysync did not ask for ({unknown[:40]!r})")
    return codings


def _inflate(chunks: Iterable[bytes], coding: str) -> Iterator[bytes]:
    inflater = zlib.decompressobj(_WBITS[coding])
    started = False
    for chunk in chunks:
        data = chunk
        while True:
            try:
                out = inflater.decompress(data, _STEP)
            except zlib.error:
                if coding != "deflate" or started:
                    raise AnswerError(f"sent a body that is not valid {coding}") from None
                inflater, started = zlib.decompressobj(-zlib.MAX_WBITS), True  # raw deflate
                continue
            started = True
            if out:
                yield out
            data = inflater.unconsumed_tail
            if not data and len(out) < _STEP:
                break
    if started and not inflater.eof:
        raise AnswerError(f"sent a truncated {coding} body")


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
