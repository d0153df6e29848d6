"""Playing an AI Gateway replica against the dev server, as Coder's gateway connects.

`gateway_status` and `replica_connection` use a real, independent WebSocket client (`websockets`);
`start_replica` runs the dev server's own stand-in, `python -m keysync.devserver.replica`, as a
subprocess that reads its key file once, the way `coder ai-gateway start` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

SERVE = "/api/v2/ai-gateway/serve"
GATEWAY_HEADER = "X-Coder-AI-Governance-Gateway-Key"
VERSION = "1.0"
IN = 101  # Switching Protocols: the replica is connected
SRC = str(Path(__file__).resolve().parent.parent / "src")


def serve_url(url: str, version: str | None = VERSION) -> str:
    query = f"?version={version}" if version is not None else ""
    return "ws" + url.removeprefix("http") + SERVE + query


@contextmanager
def replica_connection(
    url: str, secret: str, version: str | None = VERSION, headers: Mapping[str, str] | None = None
) -> Iterator[ClientConnection]:
    """An open gateway connection; the server has recorded its first heartbeat once this yields.

    `headers` go along with the handshake (a test's own checks may bypass the rate limit)."""
    sent = {GATEWAY_HEADER: secret, **(headers or {})}
    with connect(serve_url(url, version), additional_headers=sent, proxy=None, open_timeout=10) as connection:
        yield connection


def gateway_status(
    url: str, secret: str, version: str | None = VERSION, headers: Mapping[str, str] | None = None
) -> int:
    """What a replica presenting this secret gets: 101 when it is in (and seen), else the refusal."""
    try:
        with replica_connection(url, secret, version, headers):
            return IN
    except InvalidStatus as exc:
        return exc.response.status_code


def start_replica(url: str, key_file: Path) -> subprocess.Popen[str]:
    """The replica stand-in, once it has printed that it is connected (or has exited)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "keysync.devserver.replica", "--url", url, "--key-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert process.stdout is not None
    process.stdout.readline()  # "replica connected to URL", or "" when it exited instead
    return process


def stop_replica(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Stop it if it still runs; its exit code and stderr."""
    if process.poll() is None:
        process.terminate()
    _, err = process.communicate(timeout=10)
    return process.returncode, err
