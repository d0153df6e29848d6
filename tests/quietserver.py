"""Small loopback HTTP servers for tests that play a misbehaving or scripted Coder."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request a test server received."""

    method: str
    path: str
    headers: dict[str, str]


class QuietServer(ThreadingHTTPServer):
    """A threaded server that takes a client hanging up mid-answer as news, not as an error."""

    daemon_threads = True
    _thread: threading.Thread | None = None

    def serve_in_background(self) -> None:
        """Serves from a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)
