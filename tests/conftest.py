"""Shared fixtures: a real dev server on loopback and the installed `keysync` as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import forkserver
import pytest
from forkserver import Forked, ForkServer, Stream

from keysync.devserver import DevServer, DevServerConfig
from keysync.keys import SecretRecord
from keysync.secret import Secret

OWNER_TOKEN = "keysyncTst-0123456789abcdefABCDEF"
KEYSYNC = shutil.which("keysync", path=str(Path(sys.executable).parent)) or "keysync"
SINK_TEST_URL = "http://127.0.0.1:7080"


def random_record(name: str, url: str = SINK_TEST_URL) -> SecretRecord:
    """A record with a fresh random secret and id, for sink tests that talk to no Coder."""
    secret = f"sk{uuid.uuid4().hex}{uuid.uuid4().hex}"
    return SecretRecord(name, Secret(secret), str(uuid.uuid4()), secret[:11], "2026-01-02T03:04:05Z", url)


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    """Serves what current Coder serves (ai-gateway-keys, listing last_heartbeat_at), as the CLI's
    `keysync dev-server` does by default; a test about an older generation says which."""
    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN, seed=7)) as server:
        yield server


@dataclass
class Run:
    """One finished `keysync` process."""

    args: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"keysync {' '.join(self.args)} -> {self.code}\n{self.stdout}\n{self.stderr}"


@dataclass
class Cli:
    """Runs the installed keysync in a working directory with a controlled environment."""

    cwd: Path
    env: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> Run:
        server = fork_server(self.env)
        if server is not None:
            done = server.run(list(args), self.cwd, self.env, input, timeout)
            run = Run(list(args), done.code, done.stdout, done.stderr)
        else:
            started = subprocess.run(
                [KEYSYNC, *args],
                cwd=self.cwd,
                env=self.env,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            run = Run(list(args), started.returncode, started.stdout, started.stderr)
        self.runs.append(run)
        CAPTURED.append(run.stdout + run.stderr)
        return run

    def write_manifest(self, text: str, name: str = "keysync.yaml") -> Path:
        path = self.cwd / name
        path.write_text(text)
        return path


CAPTURED: list[str] = []
_FORK_SERVERS: list[ForkServer] = []


def fork_server(env: dict[str, str]) -> ForkServer | None:
    """The worker's fork server (see forkserver.py), started on first use; None when the run is
    to start the installed command: always, if so asked, and when `env` sets what only a new
    interpreter reads (PYTHONPATH for a plugin, for one)."""
    if not forkserver.wanted() or any(name.startswith("PYTHON") for name in env):
        return None
    if not _FORK_SERVERS:
        _FORK_SERVERS.append(ForkServer(KEYSYNC))
    return _FORK_SERVERS[0]


DEFAULT_SIGINT = "; ".join(
    [
        "import os, signal, sys",
        "signal.signal(signal.SIGINT, signal.SIG_DFL)",
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]
)


def start_keysync(
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
    *,
    text: bool = False,
    umask: int | None = None,
    default_sigint: bool = False,
) -> subprocess.Popen[Any] | Forked:
    """keysync in the background, from the fork server when it may (see fork_server), else the
    installed command; `default_sigint`: SIGINT handled as a keysync started from a terminal
    handles it, even if this process ignores SIGINT."""
    server = fork_server(env)
    if server is not None:
        streams = (stdin, stdout, stderr)
        return server.popen(
            list(args), cwd, env, streams, text=text, umask=umask, default_sigint=default_sigint
        )
    command = [sys.executable, "-c", DEFAULT_SIGINT, KEYSYNC] if default_sigint else [KEYSYNC]
    return subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        umask=-1 if umask is None else umask,
    )


def pytest_sessionfinish() -> None:
    for server in _FORK_SERVERS:
        server.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # test_zz_no_leaks sweeps all its worker captured, so it runs last (its folder no longer sorts last).
    last = [item for item in items if item.path.name == "test_zz_no_leaks.py"]
    items[:] = [item for item in items if item.path.name != "test_zz_no_leaks.py"] + last


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    # COVERAGE_*: coverage's subprocess patch measures the keysync processes a test starts.
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("COVERAGE_")}
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture
def cli(tmp_path: Path, dev_server: DevServer) -> Cli:
    env = base_env()
    env["CODER_URL"] = dev_server.url
    env["CODER_SESSION_TOKEN"] = dev_server.token
    return Cli(tmp_path, env)
