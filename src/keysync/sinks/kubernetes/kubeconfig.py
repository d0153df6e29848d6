"""Finding the cluster and the credentials as kubectl does: KUBECONFIG (several files merged,
the first to name an entry wins), else the manifest's `kubeconfig`, else ~/.kube/config, else the
pod's service account."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keysync.errors import SinkError
from keysync.secret import Secret, header_safe
from keysync.sinks.kubernetes.untrusted import refuse_manifest_credentials

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Where a test (or an unusual runtime) mounts the service account instead.
SERVICE_ACCOUNT_ENV = "KEYSYNC_KUBE_SERVICE_ACCOUNT_DIR"


@dataclass(frozen=True)
class ExecPlugin:
    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    interactive_mode: str
    install_hint: str
    provide_cluster_info: bool


@dataclass(frozen=True)
class UserAuth:
    """One kubeconfig user: at most one way of proving who it is, plus optional client certs."""

    token: Secret | None = None
    token_file: Path | None = None
    cert_pem: bytes | None = None
    key_pem: Secret | None = None
    exec: ExecPlugin | None = None


@dataclass(frozen=True)
class ClusterAccess:
    server: str
    namespace: str | None
    where: str  # for messages: which context of which file, or the service account
    user: UserAuth
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)  # for exec plugins' provideClusterInfo


@dataclass
class _Entry:
    body: dict[str, Any]
    directory: Path


@dataclass
class _Merged:
    clusters: dict[str, _Entry] = field(default_factory=dict)
    users: dict[str, _Entry] = field(default_factory=dict)
    contexts: dict[str, _Entry] = field(default_factory=dict)
    current: str = ""


def kubeconfig_files(env: Mapping[str, str], configured: Path | None) -> tuple[list[Path], str]:
    """The files to merge, and how they were chosen (for messages and the plan)."""
    listed = env.get("KUBECONFIG", "")
    if listed.strip():
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p.strip()], "KUBECONFIG"
    default = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    if configured is not None and configured.resolve() != default.resolve():
        return [configured], "sink.kubeconfig"
    return [default], "~/.kube/config"  # the manifest naming the default file chose nothing


def load_access(env: Mapping[str, str], configured: Path | None, context: str | None) -> ClusterAccess:
    files, chosen_by = kubeconfig_files(env, configured)
    existing = [path for path in files if path.is_file()]
    if not existing:
        if chosen_by == "~/.kube/config" and env.get("KUBERNETES_SERVICE_HOST"):
            return in_cluster(env)
        shown = ", ".join(str(path) for path in files)
        raise SinkError(
            f"kubernetes sink: no kubeconfig at {shown} ({chosen_by}) and not in a pod: set KUBECONFIG "
            "or sink.kubeconfig"
        )
    merged = _Merged()
    for path in existing:
        _merge(merged, path)
    untrusted = _Untrusted(existing[0], env) if chosen_by == "sink.kubeconfig" else None
    return _resolve(merged, context, f"{chosen_by} {':'.join(str(p) for p in existing)}", untrusted)


@dataclass(frozen=True)
class _Untrusted:
    """The file the manifest alone chose, and the environment that may still pin its server."""

    file: Path
    env: Mapping[str, str]


def _merge(merged: _Merged, path: Path) -> None:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SinkError(f"kubeconfig {path}: cannot read: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise SinkError(f"kubeconfig {path}: not a kubeconfig (a YAML mapping)")
    directory = path.parent
    for section, target, inner in (
        ("clusters", merged.clusters, "cluster"),
        ("users", merged.users, "user"),
        ("contexts", merged.contexts, "context"),
    ):
        for item in document.get(section) or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                body = item.get(inner)
                target.setdefault(item["name"], _Entry(body if isinstance(body, dict) else {}, directory))
    current = document.get("current-context")
    if not merged.current and isinstance(current, str):
        merged.current = current


def _resolve(merged: _Merged, wanted: str | None, source: str, untrusted: _Untrusted | None) -> ClusterAccess:
    name = wanted or merged.current
    if not name:
        raise SinkError(f"kubeconfig ({source}): no current-context: set sink.context")
    context = merged.contexts.get(name)
    if context is None:
        known = ", ".join(sorted(merged.contexts)) or "none"
        raise SinkError(f"kubeconfig ({source}): no context named {name!r} (contexts: {known})")
    where = f"context {name!r} of {source}"
    cluster = merged.clusters.get(str(context.body.get("cluster", "")))
    if cluster is None:
        raise SinkError(f"kubeconfig {where}: its cluster {context.body.get('cluster')!r} is not defined")
    user_name = str(context.body.get("user", ""))
    user = merged.users.get(user_name) if user_name else _Entry({}, cluster.directory)
    if user is None:
        raise SinkError(f"kubeconfig {where}: its user {user_name!r} is not defined")
    body = cluster.body
    server = str(body.get("server", "")).rstrip("/")
    if not server:
        raise SinkError(f"kubeconfig {where}: the cluster has no server")
    if untrusted is not None:  # before any plugin runs or any credential file is read
        refuse_manifest_credentials(user.body, untrusted.file, server, untrusted.env)
    namespace = context.body.get("namespace")
    ca_pem = _pem(body, "certificate-authority", cluster.directory, where)
    return ClusterAccess(
        server=server,
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        where=where,
        user=_user(user, where),
        ca_pem=ca_pem,
        insecure=body.get("insecure-skip-tls-verify") is True,
        tls_server_name=_optional_text(body.get("tls-server-name")),
        proxy_url=_optional_text(body.get("proxy-url")),
        cluster=_cluster_info(body, ca_pem),
    )


def _cluster_info(body: dict[str, Any], ca_pem: bytes | None) -> dict[str, Any]:
    """The cluster as an exec plugin with provideClusterInfo sees it (the CA as data, even
    when the kubeconfig names a file, as client-go hands it over)."""
    info = {
        k: v
        for k, v in body.items()
        if k in ("server", "tls-server-name", "insecure-skip-tls-verify", "proxy-url")
    }
    if ca_pem:
        info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return info


def _user(entry: _Entry, where: str) -> UserAuth:
    body = entry.body
    if body.get("auth-provider"):
        provider = (body["auth-provider"] or {}).get("name", "?")
        raise SinkError(
            f"kubeconfig {where}: the auth-provider {provider!r} is no longer supported (kubectl dropped "
            "them in 1.26): use its exec credential plugin (gke-gcloud-auth-plugin, kubelogin)"
        )
    token = body.get("token")
    token_file = body.get("tokenFile")
    key = _pem(body, "client-key", entry.directory, where)
    return UserAuth(
        token=_token(token, where) if isinstance(token, str) and token else None,
        token_file=_path(token_file, entry.directory) if isinstance(token_file, str) and token_file else None,
        cert_pem=_pem(body, "client-certificate", entry.directory, where),
        key_pem=Secret(key.decode("ascii", "replace")) if key else None,
        exec=_exec(body.get("exec"), entry.directory, where),
    )


def _exec(body: Any, directory: Path, where: str) -> ExecPlugin | None:
    if not isinstance(body, dict):
        return None
    command = body.get("command")
    api_version = str(body.get("apiVersion", ""))
    if not isinstance(command, str) or not command:
        raise SinkError(f"kubeconfig {where}: the exec plugin has no command")
    if api_version not in ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"):
        raise SinkError(
            f"kubeconfig {where}: exec plugin apiVersion {api_version!r} is not supported "
            "(client.authentication.k8s.io/v1 or v1beta1)"
        )
    if os.sep in command and not os.path.isabs(command):
        command = str(directory / command)  # as kubectl resolves it: against the kubeconfig's directory
    variables = {
        str(item.get("name")): str(item.get("value", ""))
        for item in body.get("env") or []
        if isinstance(item, dict) and item.get("name")
    }
    return ExecPlugin(
        command=command,
        args=[str(arg) for arg in body.get("args") or []],
        env=variables,
        api_version=api_version,
        interactive_mode=str(body.get("interactiveMode") or "IfAvailable"),
        install_hint=str(body.get("installHint") or ""),
        provide_cluster_info=body.get("provideClusterInfo") is True,
    )


def in_cluster(env: Mapping[str, str]) -> ClusterAccess:
    """The pod's own service account, as client-go's InClusterConfig finds it."""
    directory = Path(env.get(SERVICE_ACCOUNT_ENV) or SERVICE_ACCOUNT_DIR)
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    token_file = directory / "token"
    if not token_file.is_file():
        raise SinkError(f"kubernetes sink: in a pod, but no service account token at {token_file}")
    namespace_file = directory / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    ca_file = directory / "ca.crt"
    return ClusterAccess(
        server=f"https://{host}:{port}",
        namespace=namespace or None,
        where=f"the pod's service account ({directory})",
        user=UserAuth(token_file=token_file),
        ca_pem=ca_file.read_bytes() if ca_file.is_file() else None,
    )


def _pem(body: dict[str, Any], name: str, directory: Path, where: str) -> bytes | None:
    data = body.get(f"{name}-data")
    if isinstance(data, str) and data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise SinkError(f"kubeconfig {where}: {name}-data is not base64") from None
    path = body.get(name)
    if not isinstance(path, str) or not path:
        return None
    file = _path(path, directory)
    try:
        return file.read_bytes()
    except OSError as exc:
        raise SinkError(f"kubeconfig {where}: {name} {file}: cannot read: {exc.strerror}") from None


def _path(text: str, directory: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else directory / path


def _token(value: str, where: str) -> Secret:
    if not header_safe(value):
        raise SinkError(f"kubeconfig {where}: the token holds spaces, line breaks or non-ASCII characters")
    return Secret(value)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
