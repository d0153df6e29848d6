"""A request and its response, free of http.server, so the API logic stays plain functions."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BufferedIOBase
from urllib.parse import parse_qs

from keysync.devserver.gojson import encode

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

# Given the connection and its buffered reader once a 101 has gone out; returns when it is over.
Takeover = Callable[[socket.socket, BufferedIOBase], None]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased; the first value, as Go's Header.Get
    body: bytes = b""
    client: str = ""
    query: str = ""
    protocol: str = "HTTP/1.1"
    repeated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every value, in order

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def header_values(self, name: str) -> tuple[str, ...]:
        values = self.repeated.get(name.lower())
        if values is not None:
            return values
        value = self.headers.get(name.lower())
        return () if value is None else (value,)

    def query_value(self, name: str) -> str:
        """The first value of a query parameter, "" when absent, as Go's URL.Query().Get."""
        return parse_qs(self.query, keep_blank_values=True).get(name, [""])[0]


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # commit, then close the connection without answering
    takeover: Takeover | None = None  # after a 101: what speaks on the connection next


def json_response(status: int, value: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, encode(value), {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def text_response(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """What Go's http.Error writes: the text and a newline, as text/plain, no sniffing."""
    plain = {"Content-Type": TEXT_CONTENT_TYPE, "X-Content-Type-Options": "nosniff"}
    return Response(status, (text + "\n").encode("utf-8"), {**(headers or {}), **plain})
