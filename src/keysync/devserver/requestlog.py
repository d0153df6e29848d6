"""One line per request on a stream, from many threads; silent without a stream."""

from __future__ import annotations

import threading
from typing import TextIO


class RequestLog:
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def request(self, method: str, path: str, outcome: str, seconds: float) -> None:
        # The path only: no query string, no headers, so no token or secret can slip in.
        self.line(f"{method} {path} {outcome} {seconds * 1000:.1f}ms")

    def line(self, text: str) -> None:
        if self._stream is None:
            return
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()
