"""The Coder AI Gateway keys API: list, create and delete keys, with retries.

Every lower-level failure is translated into `keysync.errors.ApiError` here and nowhere else.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from keysync import __version__
from keysync import errors as e
from keysync.coder import detection
from keysync.coder.detection import content_type
from keysync.coder.fields import check_key_id, check_listed, created_key_problem, listed_key_problem, shown
from keysync.coder.pacing import Pacer, Quota
from keysync.coder.retry import UNKNOWN_OUTCOME_STATUS, Backoff, rate_limit_floor, rate_limit_wait
from keysync.coder.wire import Wire
from keysync.keys import CreatedKey, LiveKey
from keysync.loopback import is_loopback
from keysync.secret import Secret, mask
from keysync.transport.answers import AnswerError, nesting_problem, parse_json
from keysync.transport.deadline import pause, requests_interrupted
from keysync.transport.tls import certificate_problem

COLLECTIONS = {
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
}
log = logging.getLogger("keysync")
# fail_fast: a list of a million wrong items is refused at the first, not with a million errors
_LIVE_LIST = TypeAdapter(Annotated[list[LiveKey], Field(fail_fast=True)])
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
        sleep: Callable[[float], None] = pause,
    ) -> None:
        self.url = check_url(settings.url)
        self._settings = settings
        self._backoff = backoff
        self._sleep = sleep
        self._rng = random.Random()
        self._api = None if settings.api == "auto" else settings.api
        self._first_list: list[LiveKey] | None = None
        self._pace = Pacer(time.time, enabled=not settings.bypass_rate_limit)
        self._odd_hints: set[str] = set()
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
        probes = detection.probe_all(COLLECTIONS, lambda path: self._send("GET", path, idempotent=True))
        found = detection.choose(probes, self.url, self._probe_error)
        assert found.answer is not None
        self._first_list = _parse_list(*found.answer, found.path)
        return found.api

    def _probe_error(self, probe: detection.Probe) -> e.ApiError:
        assert probe.answer is not None
        return _error(*probe.answer, "GET", probe.path, self._settings.token)

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
            live = LiveKey.model_validate(created.model_dump(exclude={"key"}))
        except (ValidationError, ValueError):
            # The key may exist, but its secret is unusable: resolve as an unknown outcome.
            raise e.OutcomeUnknownError(
                f"create {name!r}: coderd answered 201 with a body keysync cannot read"
            ) from None
        problem = created_key_problem(created.key, created.key_prefix) or listed_key_problem(live)
        if problem is None and live.name != name:
            problem = f"another key's name ({shown(live.name)})"
        if problem is not None:
            raise e.OutcomeUnknownError(f"create {name!r}: coderd answered 201 with {problem}")
        return CreatedKey(live=live, secret=Secret(created.key))

    def delete_key(self, key_id: str) -> bool:
        """Deletes a key; False when it was already gone (404)."""
        path = f"{self._collection()}/{check_key_id(key_id, 'DELETE')}"
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
        attempt = limited = timeouts = 0
        waited = 0.0
        refused: e.ApiError | None = None  # the last 429, raised if the limit outlasts the budget
        while True:
            wait = self._pace.reserve(path)
            if wait > 0:
                if waited + wait > self._backoff.rate_limit_budget:
                    raise refused or e.RateLimitedError(
                        f"{method} {path}: coderd's rate limit leaves no room for {wait:.0f}s", status=429
                    )
                waited += wait
                _wait_log(wait, "coderd's rate limit: waiting %.1fs before %s %s", wait, method, path)
                self._pause(wait, method, path)
            try:
                response, body = self._wire.exchange(method, path, payload)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._raise_if_hopeless(exc, method, path)
                failure: Exception = e.TransportError(
                    f"cannot reach {self.url}{self._wire.route}: {self._reason(exc)}"
                )
                timeouts += isinstance(exc, httpx.TimeoutException)
                if timeouts > 1:
                    raise failure from None
            except httpx.RequestError as exc:
                reason = self._timed_out() if isinstance(exc, httpx.TimeoutException) else self._reason(exc)
                if not idempotent:
                    raise e.OutcomeUnknownError(f"{method} {path}: no answer ({reason})") from None
                self._raise_if_hopeless(exc, method, path)
                failure = e.TransportError(f"{method} {path}: {reason}")
                timeouts += isinstance(exc, httpx.TimeoutException)
                if timeouts > 1:  # a server this slow will not be quicker a third time
                    raise failure from None
            else:
                status = response.status_code
                self._pace.observe(path, response.headers, limited=status == 429)
                if status == 429:
                    limited += 1
                    refused = _error(response, body, method, path, self._settings.token)
                    if limited >= self._backoff.rate_limit_attempts:
                        raise refused
                    self._hold_off(path, response, limited)
                    continue
                if status in UNKNOWN_OUTCOME_STATUS and not idempotent:
                    said = _error(response, body, method, path, self._settings.token)
                    raise e.OutcomeUnknownError(
                        f"{method} {path}: {said.message}",
                        status=status,
                        detail=said.detail,
                        validations=said.validations,
                    )
                if status not in UNKNOWN_OUTCOME_STATUS:
                    return response, body
                failure = _error(response, body, method, path, self._settings.token)
            attempt += 1
            if attempt >= self._backoff.attempts:
                raise failure
            log.info("retrying %s %s (attempt %d): %s", method, path, attempt + 1, failure)
            self._pause(self._backoff.delay(attempt, self._rng), method, path)

    def _pause(self, seconds: float, method: str, path: str) -> None:
        self._sleep(seconds)
        if requests_interrupted():  # the wait was cut short: the request is not sent
            raise e.TransportError(f"{method} {path}: not sent, keysync was interrupted")

    def _raise_if_hopeless(self, exc: Exception, method: str, path: str) -> None:
        """Failures that no retry can mend: a certificate, an interrupt."""
        problem = certificate_problem(exc)
        if problem is not None:
            hint = "; pass --ca-cert with the CA that signed it" if problem.untrusted else ""
            raise e.TransportError(f"{self.url}: {problem.reason}{hint}") from None
        if requests_interrupted():
            raise e.TransportError(f"{method} {path}: ended, keysync was interrupted") from None

    def _hold_off(self, path: str, response: httpx.Response, limited: int) -> None:
        """After a 429: the pacer's model says when budget is back; without quota headers,
        Retry-After or X-RateLimit-Reset do; a hint that makes no sense is a short backoff. Never
        less than a growing floor, so a broken server cannot cause a storm of retries."""
        floor = rate_limit_floor(limited)
        if Quota.of(response.headers) is not None:
            self._pace.hold_off(path, floor)
            return
        hint = rate_limit_wait(response.headers, time.time())
        said = response.headers.get("retry-after", "")
        if hint is None and said and said not in self._odd_hints:
            self._odd_hints.add(said)
            log.warning("coderd sent an unusable Retry-After (%s): backing off instead", shown(said))
        wait = (
            hint + self._rng.uniform(0, 0.25)
            if hint is not None
            else self._backoff.delay(limited + 1, self._rng)
        )
        self._pace.hold_off(path, max(floor, wait))

    def _reason(self, exc: Exception) -> str:
        return _clean(_reason(exc), self._settings.token)

    def _timed_out(self) -> str:
        if requests_interrupted():
            return "ended, keysync was interrupted"
        return f"no complete answer within the timeout ({self._settings.timeout:g}s, --timeout)"


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
    kind = content_type(response)
    if kind != "application/json":
        raise e.MalformedResponseError(
            f"GET {path}: coderd answered {kind or 'no content type'!r}, not JSON; is --url Coder's address?"
        )
    try:
        keys = _LIVE_LIST.validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        said = "JSON nested too deeply" if nesting_problem(first["msg"]) else first["msg"]
        raise e.MalformedResponseError(
            f"GET {path}: coderd's answer is not a list of keys ({where}: {said})"
        ) from None
    check_listed(keys, path)
    return keys


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
        data = parse_json(body) if body else {}
        message = str(data["message"])
        validations = [(str(v["field"]), str(v["detail"])) for v in (data.get("validations") or [])[:20]]
        return message, str(data.get("detail") or ""), validations
    except (AnswerError, KeyError, TypeError, AttributeError):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        return f"unexpected {_clean(kind, Secret(''))[:60]} answer ({len(body)} bytes)", "", []
