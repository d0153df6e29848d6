"""The dev server: a threaded HTTP server in the background, started and stopped by the caller."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TextIO

from keysync.devserver.api import KeysApi
from keysync.devserver.config import DevServerConfig, generate_token
from keysync.devserver.httpd import DevHTTPServer
from keysync.devserver.requestlog import RequestLog
from keysync.devserver.statefile import StateFile, StateFileError
from keysync.devserver.store import KeyMaterial, KeyStore


class DevServerError(Exception):
    """The dev server cannot start; the message says why."""


class DevServer:
    """The emulator, serving in a daemon thread; also a context manager."""

    def __init__(self, config: DevServerConfig, log: TextIO | None = None) -> None:
        self.config = config
        self.token_generated = config.token is None
        self._token = config.token or generate_token()
        self._log = RequestLog(log)
        self._httpd: DevHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = config.port

    @property
    def token(self) -> str:
        return self._token

    @property
    def url(self) -> str:
        host = self.config.host or "0.0.0.0"  # "" binds every interface, like 0.0.0.0
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    def start(self) -> None:
        """Bind and serve in the background; on return the socket accepts connections."""
        if self._httpd is not None:
            return
        httpd = self._bind(KeysApi(self.config, self._load_store(), self._token))
        self._thread = threading.Thread(target=httpd.serve, name="keysync-devserver", daemon=True)
        self._httpd, self._port = httpd, httpd.server_port
        self._thread.start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        httpd.server_close()
        httpd.close_connections()

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _load_store(self) -> KeyStore:
        state = StateFile(self.config.state) if self.config.state is not None else None
        store = KeyStore(KeyMaterial(self.config.seed), state)
        try:
            store.load()
        except StateFileError as exc:
            raise DevServerError(str(exc)) from exc
        return store

    def _bind(self, api: KeysApi) -> DevHTTPServer:
        address = (self.config.host, self.config.port)
        try:
            return DevHTTPServer(address, api, self.config.latency_ms, self._log)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DevServerError(f"cannot listen on {self.url}: {reason}") from exc
