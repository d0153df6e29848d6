"""Bearer tokens that change: a token file re-read as it rotates (a pod's bound token), an exec
credential plugin's token cached until it expires. Every token is a `Secret`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keysync.errors import SinkError
from keysync.secret import Secret, header_safe
from keysync.sinks.kubernetes.kubeconfig import ExecPlugin, UserAuth

FILE_REREAD_SECONDS = 60.0  # as client-go's cached file token source
PLUGIN_SECONDS = 120.0
EXPIRY_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class PluginCredential:
    token: Secret | None
    cert_pem: bytes | None
    key_pem: Secret | None
    expires: float | None  # monotonic seconds, or None: valid until refused


class Credentials:
    """What goes in the Authorization header, refreshed when it may have changed or was refused."""

    def __init__(self, user: UserAuth, env: Mapping[str, str], cluster: dict[str, Any], where: str) -> None:
        self._user = user
        self._env = env
        self._cluster = cluster
        self._where = where
        self._lock = threading.Lock()
        self._token: Secret | None = user.token
        self._fetched = 0.0
        self._expires: float | None = None
        self.plugin_cert: tuple[bytes, Secret] | None = None
        if user.token is None and user.exec is not None:
            self._run_plugin()

    def known(self) -> list[Secret]:
        """Every secret this may send, for masking messages."""
        return [s for s in (self._token, self._user.key_pem) if s is not None]

    def header(self) -> dict[str, str]:
        with self._lock:
            if self._stale():
                self._refresh()
            return {"Authorization": f"Bearer {self._token.reveal()}"} if self._token else {}

    def refused(self) -> bool:
        """After a 401: fetches the token again; whether there is a new one worth a retry."""
        with self._lock:
            before = self._token
            if self._user.token is not None or (self._user.token_file is None and self._user.exec is None):
                return False
            self._refresh()
            return self._token is not None and self._token != before

    def _stale(self) -> bool:
        now = time.monotonic()
        if self._user.token is not None:
            return False
        if self._user.token_file is not None:
            return self._token is None or now - self._fetched >= FILE_REREAD_SECONDS
        if self._user.exec is not None:
            return self._token is None or (self._expires is not None and now >= self._expires)
        return False

    def _refresh(self) -> None:
        if self._user.token_file is not None:
            self._token = _read_token_file(self._user.token_file, self._where)
            self._fetched = time.monotonic()
        elif self._user.exec is not None:
            self._run_plugin()

    def _run_plugin(self) -> None:
        assert self._user.exec is not None
        credential = run_plugin(self._user.exec, self._env, self._cluster, self._where)
        self._token = credential.token
        self._expires = credential.expires
        if credential.cert_pem and credential.key_pem:
            self.plugin_cert = (credential.cert_pem, credential.key_pem)


def _read_token_file(path: Path, where: str) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SinkError(f"kubernetes ({where}): token file {path}: cannot read: {exc}") from None
    if not value:
        raise SinkError(f"kubernetes ({where}): token file {path} is empty")
    if not header_safe(value):
        raise SinkError(f"kubernetes ({where}): token file {path} holds spaces or non-ASCII characters")
    return Secret(value)


def run_plugin(
    plugin: ExecPlugin, env: Mapping[str, str], cluster: dict[str, Any], where: str
) -> PluginCredential:
    """Runs an exec credential plugin as kubectl does; its stderr goes to ours (it may prompt)."""
    interactive = plugin.interactive_mode != "Never" and sys.stdin is not None and sys.stdin.isatty()
    if plugin.interactive_mode == "Always" and not interactive:
        raise SinkError(
            f"kubernetes ({where}): exec plugin {plugin.command} needs an interactive terminal "
            "(interactiveMode: Always)"
        )
    spec: dict[str, Any] = {"interactive": interactive}
    if plugin.provide_cluster_info:
        spec["cluster"] = cluster
    info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
    environment = {**env, **plugin.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
    name = os.path.basename(plugin.command)
    try:
        done = subprocess.run(
            [plugin.command, *plugin.args],
            env=environment,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            timeout=PLUGIN_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        hint = f": {' '.join(plugin.install_hint.split())}" if plugin.install_hint else ""
        raise SinkError(f"kubernetes ({where}): exec plugin {plugin.command!r} not found{hint}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SinkError(f"kubernetes ({where}): exec plugin {name} could not run: {exc}") from None
    if done.returncode != 0:
        raise SinkError(f"kubernetes ({where}): exec plugin {name} failed with exit code {done.returncode}")
    return _parse_credential(done.stdout, plugin, where)


def _parse_credential(stdout: bytes, plugin: ExecPlugin, where: str) -> PluginCredential:
    name = os.path.basename(plugin.command)
    try:
        document = json.loads(stdout)
    except ValueError:
        raise SinkError(f"kubernetes ({where}): exec plugin {name} printed no ExecCredential JSON") from None
    status = document.get("status") if isinstance(document, dict) else None
    if not isinstance(status, dict) or document.get("kind") != "ExecCredential":
        raise SinkError(f"kubernetes ({where}): exec plugin {name} printed no ExecCredential status")
    if document.get("apiVersion") != plugin.api_version:
        raise SinkError(
            f"kubernetes ({where}): exec plugin {name} answered apiVersion {document.get('apiVersion')!r}, "
            f"not {plugin.api_version!r}"
        )
    token = status.get("token")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if isinstance(token, str) and token:
        if not header_safe(token):
            raise SinkError(
                f"kubernetes ({where}): exec plugin {name} printed a token with spaces or line breaks"
            )
        secret: Secret | None = Secret(token)
    elif isinstance(cert, str) and isinstance(key, str) and cert and key:
        secret = None
    else:
        raise SinkError(
            f"kubernetes ({where}): exec plugin {name} printed neither a token nor a client certificate"
        )
    return PluginCredential(
        token=secret,
        cert_pem=cert.encode() if isinstance(cert, str) and cert else None,
        key_pem=Secret(key) if isinstance(key, str) and key else None,
        expires=_expiry(status.get("expirationTimestamp"), name, where),
    )


def _expiry(value: Any, name: str, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SinkError(
            f"kubernetes ({where}): exec plugin {name}: expirationTimestamp {value!r} is not RFC 3339"
        ) from None
    remaining = (moment - datetime.now(UTC)).total_seconds()
    return time.monotonic() + max(0.0, remaining - EXPIRY_MARGIN_SECONDS)
