"""Processes for the benchmarks: timed subprocesses, throwaway dev servers, workspaces."""

from __future__ import annotations

import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

BIN = Path(sys.executable).parent
KEYSYNC = str(BIN / "keysync")
PYTHON = str(BIN / "python")
TOKEN = "bench-owner-token-0123456789"
SEED = 7
COLLECTION = "/api/v2/ai-gateway/keys"  # the dev server's default generation
STARTUP_TIMEOUT = 180.0
# Bytecode as an installed keysync would have it, in a cache of our own: nothing is written into
# the source tree, and PYTHONDONTWRITEBYTECODE (set in some shells) cannot make every run compile.
PYCACHE = Path(tempfile.gettempdir()) / f"keysync-bench-pycache-{os.getuid()}"


class BenchError(Exception):
    """A benchmark could not run as set up; the message says what went wrong."""


@dataclass(frozen=True)
class Timed:
    """One finished subprocess: wall time, its own CPU time and peak RSS, exit code and output."""

    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    stamps: tuple[float, ...] = ()  # when each stderr line arrived, in seconds after the start

    def check(self, what: str, allowed: Sequence[int] = (0,)) -> Timed:
        if self.returncode not in allowed:
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            raise BenchError(f"{what} exited {self.returncode}: " + " | ".join(tail))
        return self

    def span(self, marker: str) -> tuple[float, float]:
        """Arrival of the first and the last stderr line containing marker (progress lines)."""
        times = [t for t, line in zip(self.stamps, self.stderr.splitlines(), strict=False) if marker in line]
        if not times:
            raise BenchError(f"no stderr line contains {marker!r}")
        return times[0], times[-1]


def keysync_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_", "VAULT_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(CODER_SESSION_TOKEN=TOKEN, NO_COLOR="1", PYTHONPYCACHEPREFIX=str(PYCACHE), **(extra or {}))
    return env


def run_timed(
    argv: Sequence[str],
    cwd: Path | None = None,
    timeout: float = 900.0,
    extra_env: dict[str, str] | None = None,
) -> Timed:
    """Runs argv to completion; wait4 gives this child's own rusage, so RSS is not mixed up."""
    lines: list[bytes] = []
    stamps: list[float] = []
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=keysync_env(extra_env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        reader = threading.Thread(
            target=_stamp_lines, args=(proc.stderr, started, lines, stamps), daemon=True
        )
        reader.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=30)  # EOF once the child and anything it left behind have exited
        proc.stderr.close()
        out.seek(0)
        return Timed(
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
            proc.returncode,
            out.read().decode(errors="replace"),
            b"".join(lines).decode(errors="replace"),
            tuple(stamps),
        )


def _stamp_lines(stream: IO[bytes], started: float, lines: list[bytes], stamps: list[float]) -> None:
    for line in iter(stream.readline, b""):
        stamps.append(time.perf_counter() - started)
        lines.append(line)


def keysync(*args: str, cwd: Path | None = None, timeout: float = 900.0) -> Timed:
    return run_timed([KEYSYNC, *args], cwd=cwd, timeout=timeout)


class DevServer:
    """`keysync dev-server --port 0` in a subprocess, stopped with SIGTERM on exit."""

    def __init__(
        self,
        directory: Path,
        latency_ms: int = 0,
        state: Path | None = None,
        options: Sequence[str] = (),
        log_requests: bool = False,
    ) -> None:
        self.argv = [KEYSYNC, "dev-server", "--port", "0", "--token", TOKEN, "--seed", str(SEED)]
        self.argv += ["--latency-ms", str(latency_ms), *options]
        if state is not None:
            self.argv += ["--state", str(state)]
        self.directory = directory
        self.url = ""
        self.requests: list[tuple[float, str]] = []  # (Unix time logged, "METHOD PATH OUTCOME ...")
        self._log_requests = log_requests
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> DevServer:
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.directory,
            env=keysync_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self._log_requests else subprocess.DEVNULL,  # a line per request
        )
        try:
            self.url = self._read_url(self._proc)
        except BaseException:
            self._stop()
            raise
        if self._log_requests:
            self._reader = threading.Thread(target=self._read_requests, daemon=True)
            self._reader.start()
        return self

    def _read_requests(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in iter(self._proc.stderr.readline, b""):
            self.requests.append((time.time(), line.decode(errors="replace").strip()))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    @staticmethod
    def _read_url(proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(STARTUP_TIMEOUT):
                raise BenchError(f"the dev server printed nothing in {STARTUP_TIMEOUT:g}s")
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise BenchError(f"the dev server did not start (exit {proc.poll()}): {line!r}")
        return line.removeprefix("listening on ")

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="keysync-bench-") as directory:
        yield Path(directory)


def key_names(count: int, prefix: str = "bench") -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


def write_manifest(
    directory: Path, url: str, names: Sequence[str], sink: str = "secrets.json", indent: str = "  "
) -> Path:
    lines = ["version: 1", "coderd:", f"  url: {url}", "sink:", "  type: file", f"  path: {sink}"]
    lines.append("keys:" if names else "keys: []")
    lines += [f"{indent}- {name}" for name in names]
    path = directory / "keysync.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sink_count(directory: Path, sink: str = "secrets.json") -> int:
    import json

    return len(json.loads((directory / sink).read_text(encoding="utf-8"))["keys"])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """`median (min-max)`, scaled, for a table cell."""
    parts = [round(v * scale, digits) for v in (median(values), min(values), max(values))]
    text = [f"{p:,.{digits}f}" for p in parts]
    return text[0] if len(values) == 1 else f"{text[0]} ({text[1]}-{text[2]})"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
