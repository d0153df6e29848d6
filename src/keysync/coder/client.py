"""The Coder AI Gateway keys API: list, create and delete keys, with retries.

Every lower-level failure is translated into `keysync.errors.ApiError` here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from keysync import __version__
from keysync import errors as e
from keysync.coder.retry import UNKNOWN_OUTCOME_STATUS, Backoff, rate_limit_wait
from keysync.coder.wire import Wire
from keysync.keys import CreatedKey, LiveKey
from keysync.loopback import is_loopback
from keysync.names import name_problem
from keysync.secret import Secret, mask, redact_secret_like

COLLECTIONS = {
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
}
log = logging.getLogger("keysync")
_LIVE_LIST = TypeAdapter(list[LiveKey])
_DEFAULT_BACKOFF = Backoff()


class _CreatedBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    name: str
    key: str
    key_prefix: str
    created_at: str


@dataclass(frozen=True)
class ClientSettings:
    url: str
    token: Secret
    api: str = "auto"
    ca_cert: Path | None = None
    timeout: float = 30.0
    bypass_rate_limit: bool = False


def check_url(url: str) -> str:
    """Returns the URL without a trailing slash; refuses plain http to anything but loopback."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise e.UsageError(
            "the coderd URL is not a valid URL: check --url, CODER_URL or coderd.url"
        ) from None
    if parts.username or parts.password:
        raise e.UsageError(
            "the coderd URL carries credentials: remove them, and give the token through "
            "CODER_SESSION_TOKEN or --token-file"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise e.UsageError(f"coderd URL {url!r} must look like https://coder.example.com")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise e.UsageError(
            f"refusing plain http:// to {parts.hostname}: use https:// "
            "(plain http is allowed only for loopback)"
        )
    return url.rstrip("/")




class CoderClient:
    def __init__(
        self,
        settings: ClientSettings,
        transport: httpx.BaseTransport | None = None,
        backoff: Backoff = _DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = check_url(settings.url)
        self._settings = settings
        self._backoff = backoff
        self._sleep = sleep
        self._rng = random.Random()
        self._api = None if settings.api == "auto" else settings.api
        self._first_list: list[LiveKey] | None = None
        self._pace = _Pacer(sleep, enabled=not settings.bypass_rate_limit)
        verify = _tls_context(settings.ca_cert) if self.url.startswith("https:") else False
        self._wire = Wire(self.url, self._headers(), settings.timeout, verify, transport)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Coder-Session-Token": self._settings.token.reveal(),
            "User-Agent": f"keysync/{__version__}",
            "Accept": "application/json",
        }
        if self._settings.bypass_rate_limit:
            headers["X-Coder-Bypass-Ratelimit"] = "true"
        return headers

    def __repr__(self) -> str:
        return f"CoderClient(url={self.url!r}, api={self._api!r})"

    def close(self) -> None:
        self._wire.close()

    @property
    def api(self) -> str:
        if self._api is None:
            self._api = self._detect()
        return self._api

    def _collection(self) -> str:
        return COLLECTIONS[self.api]

    def _detect(self) -> str:
        for api, path in COLLECTIONS.items():
            response, body = self._send("GET", path, idempotent=True)
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                raise _error(response, body, "GET", path, self._settings.token)
            self._first_list = _parse_list(response, body, path)
            return api
        raise e.NotFoundError(
            f"{self.url} serves none of the AI Gateway keys APIs "
            f"({', '.join(COLLECTIONS.values())} all answered 404)",
            status=404,
        )

    def list_keys(self) -> list[LiveKey]:
        path = self._collection()
        if self._first_list is not None:
            keys, self._first_list = self._first_list, None
            return keys
        response, body = self._send("GET", path, idempotent=True)
        if response.status_code != 200:
            raise _error(response, body, "GET", path, self._settings.token)
        return _parse_list(response, body, path)

    def create_key(self, name: str) -> CreatedKey:
        path = self._collection()
        self._first_list = None  # the probe's list is stale once anything changes
        response, body = self._send("POST", path, payload={"name": name}, idempotent=False)
        if response.status_code != 201:
            raise _error(response, body, "POST", path, self._settings.token)
        try:
            created = _CreatedBody.model_validate_json(body)
            _check_key_shape(created)
            live = LiveKey.model_validate(created.model_dump(exclude={"key"}))
        except (ValidationError, ValueError):
            # The key exists, but its secret is unusable: resolve as an unknown outcome.
            raise e.OutcomeUnknownError(
                f"create {name!r}: coderd answered 201 with a body keysync cannot read"
            ) from None
        return CreatedKey(live=live, secret=Secret(created.key))

    def delete_key(self, key_id: str) -> bool:
        """Deletes a key; False when it was already gone (404)."""
        path = f"{self._collection()}/{key_id}"
        self._first_list = None
        response, body = self._send("DELETE", path, idempotent=True)
        if response.status_code == 404 and b"Route not found." not in body:
            return False
        if response.status_code not in (200, 204):
            raise _error(response, body, "DELETE", path, self._settings.token)
        return True

    def _send(
        self, method: str, path: str, *, idempotent: bool, payload: Any = None
    ) -> tuple[httpx.Response, bytes]:
        attempt = 0
        waited = 0.0
        while True:
            self._pace.before_request()
            try:
                response, body = self._wire.exchange(method, path, payload)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure: Exception = e.TransportError(
                    f"cannot reach {self.url}{self._wire.route}: {self._reason(exc)}"
                )
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # retrying cannot fix a certificate
                    raise e.TransportError(
                        f"{self.url}: TLS certificate not trusted ({self._reason(exc)}); pass --ca-cert"
                    ) from None
            except httpx.RequestError as exc:
                if not idempotent:
                    raise e.OutcomeUnknownError(f"{method} {path}: no answer ({self._reason(exc)})") from None
                failure = e.TransportError(f"{method} {path}: {self._reason(exc)}")
            else:
                self._pace.after_response(response)
                status = response.status_code
                if status == 429:
                    delay = self._rate_limit_delay(response, attempt)
                    if waited + delay > self._backoff.rate_limit_budget:
                        raise _error(response, body, method, path, self._settings.token)
                    waited += delay
                    _wait_log(delay, "coderd's rate limit: waiting %.1fs before %s %s", delay, method, path)
                    self._sleep(delay)
                    attempt += 1
                    continue
                if status in UNKNOWN_OUTCOME_STATUS and not idempotent:
                    raise e.OutcomeUnknownError(f"{method} {path}: coderd answered {status}", status=status)
                if status not in UNKNOWN_OUTCOME_STATUS:
                    return response, body
                failure = _error(response, body, method, path, self._settings.token)
            attempt += 1
            if attempt >= self._backoff.attempts:
                raise failure
            log.info("retrying %s %s (attempt %d): %s", method, path, attempt + 1, failure)
            self._sleep(self._backoff.delay(attempt, self._rng))

    def _reason(self, exc: Exception) -> str:
        return _clean(_reason(exc), self._settings.token)

    def _rate_limit_delay(self, response: httpx.Response, attempt: int) -> float:
        wait = rate_limit_wait(response.headers, time.time())
        return (
            wait + self._rng.uniform(0, 0.25)
            if wait is not None
            else self._backoff.delay(attempt + 2, self._rng)
        )


class _Pacer:
    """Waits for the rate-limit window to reset once coderd says none are left."""

    def __init__(self, sleep: Callable[[float], None], enabled: bool = True) -> None:
        self._sleep = sleep
        self._enabled = enabled
        self._lock = threading.Lock()
        self._remaining: int | None = None
        self._reset = 0.0

    def before_request(self) -> None:
        if not self._enabled:
            return
        with self._lock:
            wait = 0.0
            if self._remaining is not None and self._remaining <= 0:
                wait = self._reset - time.time()
                if wait <= 0 or wait > 180:
                    self._remaining, wait = None, 0.0
            elif self._remaining is not None:
                self._remaining -= 1
        if wait > 0:
            _wait_log(wait, "coderd's rate limit is spent: waiting %.1fs for it to reset", wait)
            self._sleep(wait)

    def after_response(self, response: httpx.Response) -> None:
        remaining = response.headers.get("x-ratelimit-remaining")
        reset = response.headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        try:
            with self._lock:
                self._remaining, self._reset = int(remaining), float(reset)
        except ValueError:
            pass


def _wait_log(seconds: float, message: str, *args: object) -> None:
    """Long waits are worth a line by default; short ones only with -v."""
    log.log(logging.WARNING if seconds >= 2 else logging.INFO, message, *args)


def _tls_context(ca_cert: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
    except (OSError, ssl.SSLError) as exc:
        raise e.UsageError(f"--ca-cert {ca_cert}: cannot load: {exc}") from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _parse_list(response: httpx.Response, body: bytes, path: str) -> list[LiveKey]:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise e.MalformedResponseError(
            f"GET {path}: coderd answered {kind or 'no content type'!r}, not JSON; is --url Coder's address?"
        )
    try:
        keys = _LIVE_LIST.validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise e.MalformedResponseError(
            f"GET {path}: coderd's answer is not a list of keys ({where}: {first['msg']})"
        ) from None
    strange = next((key.name for key in keys if name_problem(key.name)), None)
    if strange is not None:
        raise e.MalformedResponseError(
            f"GET {path}: coderd listed a key named {redact_secret_like(strange)[:80]!r}, "
            "which is no valid key name"
        )
    return keys


def _check_key_shape(created: _CreatedBody) -> None:
    key = created.key
    if not (key.isascii() and key.isalnum() and len(key) == 43) and not (
        key.startswith("cgw_") and len(key) == 43 and key[4:].isalnum()
    ):
        raise ValueError("key shape")
    if created.key_prefix != key[:11]:
        raise ValueError("key prefix")


_STATUS_ERRORS: dict[int, type[e.ApiError]] = {
    400: e.ApiValidationError,
    401: e.AuthError,
    404: e.NotFoundError,
    429: e.RateLimitedError,
}
_HINTS = {
    401: "check CODER_SESSION_TOKEN or --token-file",
    403: "keysync needs an owner's session token",
}


def _error(response: httpx.Response, body: bytes, method: str, path: str, token: Secret) -> e.ApiError:
    status = response.status_code
    if 300 <= status < 400:
        location = _clean(response.headers.get("location", ""), token)
        return e.ApiError(
            f"{method} {path} was redirected to {location!r}; "
            "set --url to the final address (keysync does not follow redirects)",
            status=status,
        )
    message, detail, validations = _error_fields(response, body)
    message, detail = _clean(message, token), _clean(detail, token)
    validations = [(_clean(field, token), _clean(text, token)) for field, text in validations]
    cls = _STATUS_ERRORS.get(status, e.ServerError if status >= 500 else e.ApiError)
    if status == 403:
        cls = e.FeatureDisabledError if "Premium feature" in message else e.ForbiddenError
    hint = _HINTS.get(status)
    if hint and cls is not e.FeatureDisabledError:
        detail = f"{detail}; {hint}" if detail else hint
    return cls(message, status=status, detail=detail, validations=validations)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_MAX_FIELD = 500


def _clean(text: str, token: Secret) -> str:
    """Server text made safe to print: no token, no control characters, one bounded line."""
    text = mask(_CONTROL.sub(" ", text), [token])
    return text if len(text) <= _MAX_FIELD else text[: _MAX_FIELD - 3] + "..."


def _error_fields(response: httpx.Response, body: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    try:
        data = json.loads(body) if body else {}
        message = str(data["message"])
        validations = [(str(v["field"]), str(v["detail"])) for v in data.get("validations") or []]
        return message, str(data.get("detail") or ""), validations
    except (ValueError, KeyError, TypeError, AttributeError):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        return f"unexpected {kind} answer ({len(body)} bytes)", "", []
