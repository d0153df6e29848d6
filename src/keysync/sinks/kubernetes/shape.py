"""The Secret a key lives in, in the shape the ai-gateway chart mounts: `type: Opaque`,
`data[data_key]` the bare secret, keysync's label, and the record's non-secret fields as
annotations (so `kubectl get secret -o yaml` shows which key it holds without revealing it)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from keysync.errors import SinkError
from keysync.keys import SecretRecord, StoredEntry
from keysync.names import kubernetes_name, name_problem

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "keysync"
SELECTOR = f"{MANAGED_BY}={MANAGER}"
_ANNOTATION = "keysync/"
_FIELDS = ("name", "id", "key_prefix", "created_at", "coderd_url", "live_name")


def annotation(field: str) -> str:
    return _ANNOTATION + field.replace("_", "-")


@dataclass(frozen=True)
class Observed:
    """What keysync knows of the Secret a key would live in."""

    exists: bool
    resource_version: str = ""
    managed: bool = False
    coderd_url: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Observed:
        meta = obj.get("metadata") or {}
        labels = _strings(meta.get("labels"))
        annotations = _strings(meta.get("annotations"))
        return cls(
            exists=True,
            resource_version=str(meta.get("resourceVersion", "")),
            managed=labels.get(MANAGED_BY) == MANAGER,
            coderd_url=annotations.get(annotation("coderd_url")),
            labels=tuple(sorted(labels.items())),
            annotations=tuple(sorted(annotations.items())),
        )


ABSENT = Observed(exists=False)


@dataclass(frozen=True)
class SecretShape:
    template: str
    data_key: str
    labels: dict[str, str]

    def __post_init__(self) -> None:
        sample = self.secret_name("a-1")
        if (
            self.template.count("{name}") != 1
            or "{" in self.template.replace("{name}", "")
            or not kubernetes_name(sample)
        ):
            raise SinkError(
                f"kubernetes sink: secret_name {self.template!r} must hold {{name}} once and make a "
                "lowercase RFC 1123 name (letters, digits, '-' and '.')"
            )

    def secret_name(self, name: str) -> str:
        return self.template.replace("{name}", name)

    def body(self, record: SecretRecord, namespace: str, seen: Observed) -> dict[str, Any]:
        """The whole Secret for a PUT or POST; a Secret adopted with --force keeps its labels and
        annotations besides keysync's."""
        labels = {**dict(seen.labels), **self.labels, MANAGED_BY: MANAGER}
        annotations = {**dict(seen.annotations), **{annotation(k): v for k, v in record.public().items()}}
        if record.live_name == record.name or not record.live_name:
            annotations.pop(annotation("live_name"), None)
        metadata: dict[str, Any] = {
            "name": self.secret_name(record.name),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        }
        if seen.exists:
            metadata["resourceVersion"] = seen.resource_version
        secret = base64.b64encode(record.key.reveal().encode()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {self.data_key: secret},
        }

    def entry(self, obj: dict[str, Any]) -> tuple[str, StoredEntry | None] | None:
        """The key name a listed Secret stands for and what plan needs of it; None when it is not
        one of this sink's (another template's, or no name annotation)."""
        meta = obj.get("metadata") or {}
        annotations = _strings(meta.get("annotations"))
        name = annotations.get(annotation("name"), "")
        if not name or name_problem(name) is not None or meta.get("name") != self.secret_name(name):
            return None
        url = annotations.get(annotation("coderd_url"), "")
        data = obj.get("data")
        data = data if isinstance(data, dict) else {}
        prefix = _decoded_prefix(data.get(self.data_key))
        entry = StoredEntry(
            name,
            annotations.get(annotation("id"), ""),
            annotations.get(annotation("key_prefix"), ""),
            prefix,
            url,
        )
        return name, entry


def _decoded_prefix(value: Any) -> str:
    """The first 11 characters of the held secret ("" when there is none or it is not base64)."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")[:11]
    except (binascii.Error, ValueError):
        return ""


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
