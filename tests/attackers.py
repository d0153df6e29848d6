"""A loopback "attacker" server that records every request, where a hostile manifest points, and
what the tests of untrusted manifests share: a vault manifest, the sink's entries, one error line."""

from __future__ import annotations

import uuid
from http.server import BaseHTTPRequestHandler

import pytest

from baoserver import Bao
from conftest import Run
from quietserver import QuietServer, Seen


class _Recorder(BaseHTTPRequestHandler):
    """Records every request and answers like a Vault that grants everything."""

    server: Attacker

    def _record(self) -> None:
        self.server.seen.append(Seen(self.command, self.path, dict(self.headers)))
        body = b'{"data": {"keys": []}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _record

    def log_message(self, format: str, *args: object) -> None:
        pass


class Attacker(QuietServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def prefix() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def vault_manifest(prefix: str, address: str | None = None, auth: str = "") -> str:
    lines = ["version: 1", "sink:", "  type: vault", f"  path: {prefix}/{{name}}"]
    if address:
        lines.append(f"  address: {address}")
    if auth:
        lines.append(auth)
    return "\n".join([*lines, "keys: [alpha, beta]", ""])


def hostport(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def one_error_line(run: Run) -> str:
    assert run.code == 1, run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("keysync: error: "), run
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run
    return lines[0]


def vault_entries(bao: Bao, prefix: str) -> list[str]:
    response = bao.api("LIST", f"secret/metadata/{prefix}")
    listed = response.json()["data"]["keys"] if response.status_code == 200 else []
    return sorted(name for name in listed if not name.startswith("."))  # not the sink's lock
