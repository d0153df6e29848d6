"""A request and its response, free of http.server, so the API logic stays plain functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keysync.devserver.gojson import encode

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""
    client: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # commit, then close the connection without answering


def json_response(status: int, value: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, encode(value), {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})
