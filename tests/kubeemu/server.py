"""The emulator's HTTP side: routing, authentication, authorization, and the verbs."""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from kubeemu import status
from kubeemu.rbac import Authorizer, Rule
from kubeemu.status import Resource, StatusError
from kubeemu.store import Store
from kubeemu.workloads import WORKLOADS, Behaviour, Rollout, new_workload, rollout_steps, strategic_merge
from quietserver import QuietServer, Seen

SECRETS = Resource("secrets", "", "Secret")
LEASES = Resource("leases", "coordination.k8s.io", "Lease")
_ROUTES = [
    re.compile(r"^/api/v1/namespaces/([^/]+)/(secrets)(?:/([^/]+))?$"),
    re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets|daemonsets)(?:/([^/]+))?$"),
    re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/(leases)(?:/([^/]+))?$"),
]
_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
_PATCH_TYPES = (
    "application/strategic-merge-patch+json",
    "application/merge-patch+json",
)
RESOURCES = {"secrets": SECRETS, "leases": LEASES, **WORKLOADS}


@dataclass
class Fault:
    """Answers the next `times` requests matching method and path fragment with `error`; without
    one, holds them until `gate` is set (a request stuck on the network), then answers them.
    Faults apply in the order queued: a hold queued after a failure catches the request after."""

    method: str
    path_contains: str
    error: Callable[[], StatusError] | None
    times: int = 1
    gate: threading.Event = field(default_factory=threading.Event)
    held: list[str] = field(default_factory=list)  # the requests that waited, as "METHOD path"


class KubeEmu:
    """Start with `with KubeEmu() as emu:`; `emu.url` is its address, `emu.token` an admin token."""

    def __init__(self, tls: Any = None) -> None:
        """tls: a trustme.CA to serve HTTPS with (and to accept client certificates it signed)."""
        self.store = Store()
        self.authz = Authorizer()
        self.tokens: dict[str, str] = {}
        self.rollouts: dict[tuple[str, str, str], Rollout] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.on_request: Callable[[str, str], None] | None = None
        # Called as (resource, namespace, name) when a pod template changes: a test's pods restart.
        self.on_rollout: Callable[[str, str, str], None] | None = None
        self.token = f"emu-admin-{secrets.token_hex(12)}"
        self.add_user("admin", self.token)
        self._server = QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.ca = tls
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            tls.configure_trust(context)
            context.verify_mode = ssl.CERT_OPTIONAL
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KubeEmu:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for fault in self.faults:
            fault.gate.set()  # held requests end with the test
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()

    # --- what tests arrange ----------------------------------------------------------------------

    def add_user(self, user: str, token: str | None = None, *rules: Rule) -> None:
        if token is not None:
            self.tokens[token] = user
        if rules:
            self.authz.only(user, *rules)
        elif user not in self.authz.rules:
            self.authz.allow_all(user)

    def namespace(self, name: str) -> str:
        self.store.namespaces.add(name)
        return name

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.peek(SECRETS, namespace, name)

    def secret_value(self, namespace: str, name: str, key: str = "key") -> str | None:
        found = self.secret(namespace, name)
        data = (found or {}).get("data") or {}
        return base64.b64decode(data[key]).decode() if key in data else None

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: dict[str, str],
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Writes a Secret by hand, behind keysync's back (values given in clear)."""
        current = self.secret(namespace, name) or {"metadata": {}}
        meta = {**current["metadata"], "name": name}
        if labels is not None:
            meta["labels"] = labels
        if annotations is not None:
            meta["annotations"] = annotations
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        obj = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": encoded}
        return self.store.put_raw(SECRETS, namespace, obj)

    def delete_secret(self, namespace: str, name: str) -> None:
        self.store.delete(SECRETS, namespace, name)

    def workload(
        self,
        namespace: str,
        name: str,
        *,
        kind: str = "deployments",
        replicas: int = 2,
        behaviour: Behaviour = "progress",
    ) -> Rollout:
        resource = WORKLOADS[kind]
        self.store.put_raw(resource, namespace, new_workload(resource, namespace, name, replicas))
        rollout = self.rollouts[(kind, namespace, name)] = Rollout(behaviour)
        return rollout

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.peek(LEASES, namespace, name)

    def fail(self, method: str, path_contains: str, error: Callable[[], StatusError], times: int = 1) -> None:
        self.faults.append(Fault(method, path_contains, error, times))

    def hold(self, method: str, path_contains: str, times: int = 1) -> Fault:
        """Holds the next `times` matching requests until the returned fault's `gate` is set."""
        fault = Fault(method, path_contains, None, times)
        self.faults.append(fault)
        return fault

    def kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        namespace: str | None = None,
        user: dict[str, Any] | None = None,
        cluster: dict[str, Any] | None = None,
        context: str = "emu",
    ) -> Path:
        """Writes a kubeconfig whose current context points at the emulator."""
        cluster_entry: dict[str, Any] = {"server": self.url, **(cluster or {})}
        if self.ca is not None and "certificate-authority-data" not in cluster_entry:
            pem = self.ca.cert_pem.bytes()
            cluster_entry.setdefault("certificate-authority-data", base64.b64encode(pem).decode())
        context_entry: dict[str, Any] = {"cluster": "emu", "user": "emu-user"}
        if namespace:
            context_entry["namespace"] = namespace
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": cluster_entry}],
            "users": [
                {"name": "emu-user", "user": user if user is not None else {"token": token or self.token}}
            ],
            "contexts": [{"name": context, "context": context_entry}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(document))
        return path

    @contextmanager
    def paused(self) -> Iterator[threading.Event]:
        """Holds every request until the event is set (or the block ends)."""
        gate = threading.Event()
        previous = self.on_request

        def hold(method: str, path: str) -> None:
            gate.wait(10)

        self.on_request = hold
        try:
            yield gate
        finally:
            gate.set()
            self.on_request = previous

    # --- answering ---------------------------------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes, user: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.on_request is not None:
            self.on_request(method, target)
        try:
            if user is None:
                raise status.unauthorized()
            self._inject_fault(method, target)
            return self._route(method, target, headers, body, user)
        except StatusError as error:
            return error.code, error.body(), error.headers

    def _inject_fault(self, method: str, target: str) -> None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path_contains in target:
                fault.times -= 1
                if fault.error is not None:
                    raise fault.error()
                fault.held.append(f"{method} {target}")
                fault.gate.wait(10)
                return

    def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes, user: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == _REVIEWS and method == "POST":
            return 201, self._review(_json(body), user), {}
        for pattern in _ROUTES:
            match = pattern.match(parts.path)
            if match:
                namespace, plural, name = match.group(1), match.group(2), match.group(3) or ""
                resource = RESOURCES[plural]
                verb = _verb(method, bool(name))
                if not self.authz.allows(user, verb, resource.group, plural, name, namespace):
                    raise status.forbidden(resource, name, user, verb, namespace)
                return self._verb(verb, resource, namespace, name, query, headers, body)
        raise StatusError(404, "NotFound", "the server could not find the requested resource", {})

    def _verb(
        self,
        verb: str,
        resource: Resource,
        namespace: str,
        name: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        store = self.store
        if verb == "list":
            items = [
                o for o in store.list(resource, namespace) if _selected(o, query.get("labelSelector", ""))
            ]
            kind = f"{resource.kind}List"
            return (
                200,
                {"kind": kind, "apiVersion": _api_version(resource), "metadata": {}, "items": items},
                {},
            )
        if verb == "get":
            return 200, self._read(resource, namespace, name), {}
        if verb == "create":
            return 201, store.create(resource, namespace, _normalised(resource, _json(body))), {}
        if verb == "update":
            return 200, self._update(resource, namespace, name, _normalised(resource, _json(body))), {}
        if verb == "patch":
            return 200, self._patch(resource, namespace, name, headers.get("content-type", ""), body), {}
        if verb == "delete":
            options = _json(body) if body else {}
            precondition = str((options.get("preconditions") or {}).get("resourceVersion", ""))
            return 200, store.delete(resource, namespace, name, precondition), {}
        raise StatusError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _read(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            obj = self.store.get(resource, namespace, name)
            rollout = self.rollouts.get((resource.plural, namespace, name))
            if rollout is not None and rollout.steps:
                obj["status"] = rollout.steps.popleft()
                obj = self.store.put_raw(resource, namespace, obj)
            return obj

    def _update(self, resource: Resource, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.store.lock:
            before = self.store.get(resource, namespace, name)
            updated = self.store.replace(resource, namespace, name, body)
            return self._after_write(resource, namespace, name, before, updated)

    def _patch(
        self, resource: Resource, namespace: str, name: str, content_type: str, body: bytes
    ) -> dict[str, Any]:
        if content_type.split(";")[0].strip() not in _PATCH_TYPES:
            raise status.unsupported_media_type(content_type)
        with self.store.lock:
            before = self.store.get(resource, namespace, name)
            merged = strategic_merge(before, _json(body))
            merged["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"]
            updated = self.store.replace(resource, namespace, name, _normalised(resource, merged))
            return self._after_write(resource, namespace, name, before, updated)

    def _after_write(
        self, resource: Resource, namespace: str, name: str, before: dict[str, Any], after: dict[str, Any]
    ) -> dict[str, Any]:
        """A changed pod template bumps the generation and starts a rollout."""
        rollout = self.rollouts.get((resource.plural, namespace, name))
        if resource.plural not in WORKLOADS or before["spec"].get("template") == after["spec"].get(
            "template"
        ):
            return after
        after["metadata"]["generation"] = before["metadata"].get("generation", 1) + 1
        after["status"] = before.get("status", {})
        if rollout is None:
            rollout = self.rollouts[(resource.plural, namespace, name)] = Rollout()
        annotations = after["spec"]["template"].get("metadata", {}).get("annotations", {})
        rollout.restarts.append(str(annotations.get("kubectl.kubernetes.io/restartedAt", "")))
        rollout.steps.clear()
        rollout.steps.extend([dict(after["status"]), *rollout_steps(resource, after, rollout.behaviour)])
        if self.on_rollout is not None:
            self.on_rollout(resource.plural, namespace, name)
        return self.store.put_raw(resource, namespace, after)

    def _review(self, review: dict[str, Any], user: str) -> dict[str, Any]:
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        allowed = self.authz.allows(
            user,
            str(attributes.get("verb", "")),
            str(attributes.get("group", "")),
            str(attributes.get("resource", "")),
            str(attributes.get("name", "")),
            str(attributes.get("namespace", "")),
        )
        answer: dict[str, Any] = {"allowed": allowed}
        if allowed:
            answer["reason"] = (
                f'RBAC: allowed by ClusterRoleBinding "emu" of ClusterRole "emu" to User "{user}"'
            )
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": review.get("spec") or {},
            "status": answer,
        }

    def user_of(self, headers: dict[str, str], peer: dict[str, Any] | None) -> str | None:
        authorization = headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            return self.tokens.get(authorization[len("Bearer ") :])
        for entry in (peer or {}).get("subject", ()):
            for key, value in entry:
                if key == "commonName":
                    return str(value)
        return None


def _verb(method: str, named: bool) -> str:
    verbs = {
        "GET": "get" if named else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }
    return verbs.get(method, method.lower())


def _api_version(resource: Resource) -> str:
    return f"{resource.group}/v1" if resource.group else "v1"


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise status.bad_request("the body is not JSON") from None
    if not isinstance(document, dict):
        raise status.bad_request("the body is not a JSON object")
    return document


def _normalised(resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
    if resource is not SECRETS:
        return body
    body = dict(body)
    data = dict(body.get("data") or {})
    for key, value in (body.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    body["data"] = data
    body.setdefault("type", "Opaque")
    return body


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for requirement in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in requirement:
            key, value = requirement.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def _handler_for(emu: KubeEmu) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            emu.seen.append(Seen(self.command, self.path, headers))
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            code, answer, extra = emu.answer(
                self.command, self.path, headers, body, emu.user_of(headers, peer)
            )
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
