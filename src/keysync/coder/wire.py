"""HTTP exchanges with one server, through httpx's transport API, one connection pool per thread.

keysync needs none of `httpx.Client`'s cookie jar, auth flow, redirect or event-hook machinery,
and skipping it takes a third off the CPU of every request. One pool per thread, because a pool
shared by many threads serialises them on its lock, twice a request.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from typing import Any

import httpx

from keysync import errors as e
from keysync.transport.answers import AnswerError, read_body
from keysync.transport.deadline import bounded_transport, deadline

MAX_BODY = 64 << 20


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY (or the system's settings) name for url, unless
    NO_PROXY exempts its host. A bare `host:port` means an http:// proxy, as for curl and httpx."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Wire:
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: float,
        verify: ssl.SSLContext | bool,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = base_url
        self._headers = {**headers, "Accept-Encoding": "gzip, deflate"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._seconds = timeout
        self._timeout = httpx.Timeout(timeout).as_dict()
        # One TLS context for every thread's pool (plain-http pools never use theirs): httpx would
        # otherwise make one per pool, which costs more than the pool.
        self._verify = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=False)
        )
        self._shared = transport
        self._proxy = environment_proxy(httpx.URL(base_url)) if transport is None else None
        self._local = threading.local()
        self._opened: list[httpx.BaseTransport] = []
        self._lock = threading.Lock()
        self._transport()  # a proxy keysync cannot use is refused now, not in the first request

    def exchange(self, method: str, path: str, payload: Any = None) -> tuple[httpx.Response, bytes]:
        """Sends one request; the answer and its whole (decoded, bounded) body."""
        headers, content = self._headers, None
        if payload is not None:
            headers, content = self._json_headers, json.dumps(payload).encode()
        request = httpx.Request(
            method, self._base + path, headers=headers, content=content, extensions={"timeout": self._timeout}
        )
        with deadline(self._seconds):  # the whole exchange, however slowly its bytes arrive
            response = self._transport().handle_request(request)
            response.request = request
            try:
                return response, _read_bounded(response, method, path)
            finally:
                response.close()

    @property
    def route(self) -> str:
        """How requests travel, for error messages: " through the proxy http://host:port", or ""."""
        return f" through the proxy {_without_credentials(self._proxy)}" if self._proxy else ""

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for transport in opened:
            transport.close()

    def _transport(self) -> httpx.BaseTransport:
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = bounded_transport(self._shared or self._open())
            self._local.transport = transport
            with self._lock:
                if transport not in self._opened:
                    self._opened.append(transport)
        return transport

    def _open(self) -> httpx.HTTPTransport:
        try:
            return httpx.HTTPTransport(
                verify=self._verify,
                proxy=self._proxy,
                trust_env=False,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            )
        except ImportError:
            raise e.UsageError(
                f"cannot use the proxy {_without_credentials(self._proxy)}: SOCKS needs "
                "pip install 'httpx[socks]'"
            ) from None
        except (ValueError, httpx.InvalidURL):
            raise e.UsageError(
                f"cannot use the proxy {_without_credentials(self._proxy)} (HTTP_PROXY, HTTPS_PROXY "
                "or ALL_PROXY): keysync speaks to http, https and socks5 proxies"
            ) from None


def _without_credentials(url: str | None) -> str:
    try:
        parts = httpx.URL(url or "")
    except httpx.InvalidURL:
        return "named in the environment"
    host = f"[{parts.host}]" if ":" in parts.host else parts.host
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _read_bounded(response: httpx.Response, method: str, path: str) -> bytes:
    try:
        return read_body(response, MAX_BODY)
    except AnswerError as exc:
        raise e.MalformedResponseError(f"{method} {path}: coderd {exc}") from None
