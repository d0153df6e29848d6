"""Status bodies, worded as kube-apiserver words them (staging/src/k8s.io/apimachinery errors.go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RFC1123_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


@dataclass(frozen=True)
class Resource:
    """A resource as error messages name it: `secrets`, `deployments.apps`."""

    plural: str
    group: str
    kind: str

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass
class StatusError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(resource: Resource, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    return details


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def forbidden(resource: Resource, name: str, user: str, verb: str, namespace: str) -> StatusError:
    subject = f'{resource.qualified} "{name}"' if name else resource.qualified
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource.plural}" in API group '
        f'"{resource.group}" in the namespace "{namespace}"'
    )
    return StatusError(403, "Forbidden", message, _details(resource, name))


def not_found(resource: Resource, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{resource.qualified} "{name}" not found', _details(resource, name))


def namespace_not_found(namespace: str) -> StatusError:
    return StatusError(
        404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
    )


def already_exists(resource: Resource, name: str) -> StatusError:
    return StatusError(
        409, "AlreadyExists", f'{resource.qualified} "{name}" already exists', _details(resource, name)
    )


def conflict(resource: Resource, name: str) -> StatusError:
    message = (
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return StatusError(409, "Conflict", message, _details(resource, name))


def invalid(resource: Resource, name: str, causes: list[tuple[str, str, str]]) -> StatusError:
    """causes: (field, reason, message) each, as field.ErrorList renders them."""
    said = ", ".join(f"{path}: {message}" for path, _, message in causes)
    text = f'{resource.kind} "{name}" is invalid: ' + (f"[{said}]" if len(causes) > 1 else said)
    details = {
        "name": name,
        **({"group": resource.group} if resource.group else {}),
        "kind": resource.kind,
        "causes": [{"reason": reason, "message": message, "field": path} for path, reason, message in causes],
    }
    return StatusError(422, "Invalid", text, details)


def too_many_requests(retry_after: int) -> StatusError:
    return StatusError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": retry_after},
        {"Retry-After": str(retry_after)},
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
        f"application/strategic-merge-patch+json ({content_type!r} sent)",
    )
