"""Objects by resource, namespace and name, each write bumping one cluster-wide resourceVersion."""

from __future__ import annotations

import copy
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from kubeemu import status
from kubeemu.status import Resource

SECRET_LIMIT = 1 << 20
_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.namespaces: set[str] = {"default"}
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 1000

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            self._need_namespace(namespace)
            found = self._objects.get((resource.plural, namespace, name))
            if found is None:
                raise status.not_found(resource, name)
            return copy.deepcopy(found)

    def peek(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._objects.get((resource.plural, namespace, name))
            return copy.deepcopy(found) if found else None

    def list(self, resource: Resource, namespace: str) -> list[dict[str, Any]]:
        with self.lock:
            self._need_namespace(namespace)
            return [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == resource.plural and ns == namespace
            ]

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._need_namespace(namespace)
            name = str(body.get("metadata", {}).get("name", ""))
            self.validate(resource, name, body)
            if (resource.plural, namespace, name) in self._objects:
                raise status.already_exists(resource, name)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
            meta.pop("resourceVersion", None)
            return self._put(resource, namespace, name, obj)

    def replace(self, resource: Resource, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            current = self.get(resource, namespace, name)
            sent = str(body.get("metadata", {}).get("resourceVersion", ""))
            if sent and sent != current["metadata"]["resourceVersion"]:
                raise status.conflict(resource, name)
            self.validate(resource, name, body)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "generation"):
                if kept in current["metadata"]:
                    meta[kept] = current["metadata"][kept]
            meta["namespace"] = namespace
            return self._put(resource, namespace, name, obj)

    def delete(self, resource: Resource, namespace: str, name: str, precondition: str = "") -> dict[str, Any]:
        with self.lock:
            current = self.get(resource, namespace, name)
            if precondition and precondition != current["metadata"]["resourceVersion"]:
                raise status.conflict(resource, name)
            del self._objects[(resource.plural, namespace, name)]
            return current

    def put_raw(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Stores obj as it is (a fresh resourceVersion): the test's hand behind keysync's back."""
        with self.lock:
            self.namespaces.add(namespace)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["namespace"] = namespace
            return self._put(resource, namespace, str(meta["name"]), copy.deepcopy(obj))

    def validate(self, resource: Resource, name: str, body: dict[str, Any]) -> None:
        causes: list[tuple[str, str, str]] = []
        if not name:
            causes.append(
                ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
            )
        elif len(name) > 253 or not _RFC1123.match(name):
            message = f'Invalid value: "{name}": {status.RFC1123_MESSAGE}'
            if len(name) > 253:
                message = f'Invalid value: "{name}": must be no more than 253 characters'
            causes.append(("metadata.name", "FieldValueInvalid", message))
        if resource.plural == "secrets":
            causes += _secret_problems(body)
        if causes:
            raise status.invalid(resource, name, causes)

    def _put(self, resource: Resource, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._objects[(resource.plural, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _need_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise status.namespace_not_found(namespace)


def _secret_problems(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    import base64
    import binascii

    data = body.get("data") or {}
    size = 0
    for key, value in data.items():
        try:
            size += len(key) + len(base64.b64decode(str(value), validate=True))
        except binascii.Error:
            return [(f"data[{key}]", "FieldValueInvalid", "Invalid value: illegal base64 data")]
    if size > SECRET_LIMIT:
        return [("data", "FieldValueTooLong", f"Too long: must have at most {SECRET_LIMIT} bytes")]
    return []
