"""The Kubernetes API over httpx: TLS as the kubeconfig says, the bearer token refreshed after a
401, 429 waited out as `Retry-After` says, and every failure one `SinkError` line built from the
Status body (its message, reason and code). No token ever reaches a message."""

from __future__ import annotations

import json
import logging
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from keysync.errors import SinkError
from keysync.hosts import require_allowed
from keysync.loopback import is_loopback
from keysync.secret import Secret, mask
from keysync.sinks.kubernetes.credentials import Credentials
from keysync.sinks.kubernetes.kubeconfig import ClusterAccess
from keysync.transport.answers import AnswerError, parse_json, read_body
from keysync.transport.deadline import bounded_client, deadline, pause
from keysync.transport.tls import caused_by_tls, certificate_problem

MAX_BODY = 64 << 20
_MESSAGE_LIMIT = 500  # of a Status message in one error line
RATE_LIMIT_BUDGET_SECONDS = 60.0
_RETRYABLE_READS = (500, 502, 503, 504)
_log = logging.getLogger("keysync")


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    doing: str
    content: bytes | None
    params: dict[str, str] | None
    content_type: str
    secrets: Sequence[Secret]
    within: float | None  # None: patient (reads retried, 429 waited out); else once, this long


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if self.body.get("kind") == "Status" else ""

    @property
    def message(self) -> str:
        said = self.body.get("message") if self.body.get("kind") == "Status" else None
        return " ".join(str(said).split())[:_MESSAGE_LIMIT] if said else f"answered {self.status}"


class KubeApi:
    def __init__(self, access: ClusterAccess, env: Mapping[str, str], timeout: float) -> None:
        self.server = check_server(access.server, access.where)
        require_allowed(self.server, env, f"the Kubernetes API server of {access.where}")
        self.where = access.where
        self._credentials = Credentials(access.user, env, access.cluster, access.where)
        self._timeout = timeout
        self._proxy = access.proxy_url or _environment_proxy(self.server, env)
        self._extensions = {"sni_hostname": access.tls_server_name} if access.tls_server_name else {}
        client_cert = _client_cert(access) or self._credentials.plugin_cert
        client = httpx.Client(
            base_url=self.server,
            timeout=timeout,
            verify=_tls_context(access, client_cert),
            proxy=self._proxy,
            trust_env=False,
            headers={"Accept": "application/json", "User-Agent": "keysync"},
        )
        self._client = bounded_client(client)  # every request held to the deadline, proxies included

    def call(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        allow: Sequence[int] = (),
        secrets: Sequence[Secret] = (),
        within: float | None = None,
    ) -> Reply:
        """One request; raises SinkError unless it succeeds or answers a status in `allow`.
        `within` sends it once, bounded by that many seconds, for a caller on a deadline of its
        own (the Lease); otherwise reads are retried and 429s waited out."""
        content = json.dumps(body).encode() if body is not None else None
        request = _Request(method, path, doing, content, params, content_type, secrets, within)
        reply = self._send(request)
        if reply.status >= 300 and reply.status not in allow:
            raise self.failure(doing, reply, secrets)
        return reply

    def failure(self, doing: str, reply: Reply, secrets: Sequence[Secret] = ()) -> SinkError:
        reason = f" ({reply.status} {reply.reason})" if reply.reason else f" ({reply.status})"
        hint = f": the credentials of {self.where} were refused" if reply.status == 401 else ""
        return self.error(f"{doing}: {reply.message}{reason}{hint}", secrets)

    def error(self, text: str, secrets: Sequence[Secret] = ()) -> SinkError:
        return SinkError(mask(f"kubernetes {self.server}: {text}", [*self._credentials.known(), *secrets]))

    def close(self) -> None:
        self._client.close()

    def _send(self, request: _Request) -> Reply:
        patient = request.within is None
        deadline_at = time.monotonic() + (RATE_LIMIT_BUDGET_SECONDS if patient else 0.0)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            answer = self._once(request)
            if answer is None:  # no answer: only a read may be sent again
                if request.method == "GET" and attempt < 3 and patient:
                    pause(0.2 * attempt)
                    continue
                raise self.error(
                    f"{request.doing}: no answer from the API server{self._route()}", request.secrets
                )
            reply, headers = answer
            if reply.status == 401 and not refreshed and self._credentials.refused():
                refreshed = True
                continue
            wait = _retry_wait(reply, headers, request.method, attempt)
            if wait is not None and time.monotonic() + wait < deadline_at:
                _log.info(
                    "kubernetes %s: %s answered %d; trying again in %.1fs",
                    self.server,
                    request.path,
                    reply.status,
                    wait,
                )
                pause(wait)  # an interrupt ends the wait
                continue
            return reply

    def _once(self, request: _Request) -> tuple[Reply, httpx.Headers] | None:
        doing, secrets = request.doing, request.secrets
        headers = self._credentials.header()
        if request.content is not None:
            headers["Content-Type"] = request.content_type
        built = self._client.build_request(
            request.method,
            request.path,
            content=request.content,
            params=request.params,
            headers=headers,
            extensions=self._extensions,
        )
        seconds = request.within or self._timeout
        try:
            with deadline(seconds):  # the whole request, however slowly its bytes arrive
                response = self._client.send(built, stream=True)
                try:
                    raw = read_body(response, MAX_BODY)
                finally:
                    response.close()
        except AnswerError as exc:
            raise self.error(f"{doing}: the API server {exc}", secrets) from None
        except httpx.TimeoutException:
            raise self.error(f"{doing}: no answer within {seconds:g}s{self._route()}", secrets) from None
        except httpx.ConnectError as exc:
            problem = certificate_problem(exc)
            if problem is not None:
                hint = "; check the cluster's certificate-authority" if problem.untrusted else ""
                raise self.error(f"{doing}: TLS failure: {problem.reason}{hint}", secrets) from None
            if caused_by_tls(exc):
                raise self.error(f"{doing}: TLS failure ({exc})", secrets) from None
            raise self.error(f"{doing}: cannot connect ({exc}){self._route()}", secrets) from None
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return None
        except httpx.HTTPError as exc:
            raise self.error(f"{doing}: request failed ({exc})", secrets) from None
        return Reply(response.status_code, _document(raw)), response.headers

    def _route(self) -> str:
        return " through the proxy" if self._proxy else ""


def _client_cert(access: ClusterAccess) -> tuple[bytes, Secret] | None:
    user = access.user
    if user.cert_pem and user.key_pem:
        return user.cert_pem, user.key_pem
    return None


def check_server(server: str, where: str) -> str:
    parts = urlsplit(server)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SinkError(f"kubeconfig {where}: server {server!r} must look like https://host:port")
    if parts.username or parts.password:
        raise SinkError(f"kubeconfig {where}: the server URL carries credentials: remove them")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise SinkError(
            f"kubeconfig {where}: refusing plain http:// to {parts.hostname}: use https:// "
            "(plain http is allowed only for loopback)"
        )
    return server.rstrip("/")


def _tls_context(access: ClusterAccess, client_cert: tuple[bytes, Secret] | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if access.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif access.ca_pem:
        try:
            context.load_verify_locations(cadata=access.ca_pem.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise SinkError(f"kubeconfig {access.where}: certificate-authority: cannot load: {exc}") from None
    if client_cert is not None:
        _load_client_cert(context, *client_cert, where=access.where)
    return context


def _load_client_cert(context: ssl.SSLContext, cert: bytes, key: Secret, where: str) -> None:
    """ssl loads a key only from a file: a private directory holds it for the moment it takes."""
    with tempfile.TemporaryDirectory(prefix="keysync-kube-") as directory:
        cert_file, key_file = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_text(key.reveal())
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError:
            raise SinkError(
                f"kubeconfig {where}: client-certificate and client-key do not load as a pair"
            ) from None


def _environment_proxy(server: str, env: Mapping[str, str]) -> str | None:
    """The proxy kubectl would take from the environment: HTTPS_PROXY or HTTP_PROXY by the
    server's scheme, unless NO_PROXY exempts it; never for loopback (Go's ProxyFromEnvironment)."""
    parts = urlsplit(server)
    host = parts.hostname or ""
    variable = f"{parts.scheme}_proxy"
    proxy = env.get(variable.upper()) or env.get(variable)
    if not proxy or is_loopback(host) or _exempt(host, env.get("NO_PROXY") or env.get("no_proxy") or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _exempt(host: str, no_proxy: str) -> bool:
    """NO_PROXY: `*`, or names that match the host or a domain it is under."""
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        name = entry.lstrip(".").split(":")[0] if entry.count(":") <= 1 else entry.strip("[]")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def _document(raw: bytes) -> dict[str, Any]:
    """The answer's JSON object; {} for anything else (its status code then speaks alone)."""
    if not raw:
        return {}
    try:
        document = parse_json(raw)  # bounded in nesting: never a RecursionError
    except AnswerError:
        return {}
    return document if isinstance(document, dict) else {}


def _retry_wait(reply: Reply, headers: httpx.Headers, method: str, attempt: int) -> float | None:
    """How long to wait before sending again: 429 as Retry-After says (API priority and fairness
    sets it), a failed read briefly; None: do not send again."""
    if reply.status == 429:
        try:
            return min(30.0, max(0.1, float(headers.get("Retry-After", "1"))))
        except ValueError:
            return 1.0
    if reply.status in _RETRYABLE_READS and method == "GET" and attempt < 3:
        return 0.2 * attempt
    return None
