"""The preflight: SelfSubjectAccessReviews for every verb the sink will use, so that a missing
permission is named before anything changes (RBAC cannot limit `create` by name: none is known
before the object exists, so create is reviewed without one)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from keysync.sinks.kubernetes.api import KubeApi

REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SECRET_VERBS = ("get", "list", "create", "update", "delete")
WORKLOAD_VERBS = ("get", "patch")
LEASE_VERBS = ("get", "create", "update", "delete")
GROUPS = {
    "secrets": "",
    "leases": "coordination.k8s.io",
    "deployments": "apps",
    "statefulsets": "apps",
    "daemonsets": "apps",
}


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    name: str = ""

    @property
    def qualified(self) -> str:
        group = GROUPS[self.resource]
        return f"{self.resource}.{group}" if group else self.resource

    def __str__(self) -> str:
        return f"{self.verb} {self.qualified}" + (f" {self.name!r}" if self.name else "")


def describe(missing: list[Permission]) -> str:
    """`create, update secrets; get, patch deployments.apps (gw-a, gw-b)`: verbs by resource."""
    verbs: dict[str, dict[str, None]] = {}
    names: dict[str, dict[str, None]] = {}
    for permission in missing:
        verbs.setdefault(permission.qualified, {})[permission.verb] = None
        if permission.name:
            names.setdefault(permission.qualified, {})[permission.name] = None
    parts = []
    for resource, said in verbs.items():
        named = f" ({', '.join(names[resource])})" if resource in names else ""
        parts.append(f"{', '.join(said)} {resource}{named}")
    return "; ".join(parts)


def needed(lease_name: str, workloads: list[tuple[str, str]]) -> list[Permission]:
    """Secrets by verb, each workload (resource, name) to roll, and the lock's Lease."""
    wanted = [Permission(verb, "secrets") for verb in SECRET_VERBS]
    for resource, name in workloads:
        wanted += [Permission(verb, resource, name) for verb in WORKLOAD_VERBS]
    wanted += [Permission(verb, "leases", "" if verb == "create" else lease_name) for verb in LEASE_VERBS]
    return wanted


def missing(api: KubeApi, namespace: str, wanted: list[Permission]) -> list[Permission]:
    with ThreadPoolExecutor(8, thread_name_prefix="keysync-kube-review") as pool:
        allowed = list(pool.map(lambda p: _allowed(api, namespace, p), wanted))
    return [permission for permission, ok in zip(wanted, allowed, strict=True) if not ok]


def _allowed(api: KubeApi, namespace: str, permission: Permission) -> bool:
    attributes = {
        "namespace": namespace,
        "verb": permission.verb,
        "group": GROUPS[permission.resource],
        "resource": permission.resource,
    }
    if permission.name:
        attributes["name"] = permission.name
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    reply = api.call("POST", REVIEWS, f"reviewing access ({permission})", body=review)
    status = reply.body.get("status")
    return isinstance(status, dict) and status.get("allowed") is True and status.get("denied") is not True
