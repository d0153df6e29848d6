"""`keysync watch` as a process: started with a metrics endpoint, its JSON log lines and metrics
read back, waited on with a deadline, killed at the end of the test; the manifest it rereads and
the sink file it writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from forkserver import Forked
from prometheus_client.parser import text_string_to_metric_families

from conftest import start_keysync

SINK = Path("secrets/ai-gateway-keys.json")
DEADLINE = 30.0
T = TypeVar("T")


def sink_records(cwd: Path) -> dict[str, dict[str, Any]]:
    path = cwd / SINK
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = json.loads(path.read_text())["keys"]
    return records


def write_atomically(path: Path, text: str) -> None:
    """A watcher reading mid-write must see the old manifest or the new one, never half."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def until(check: Callable[[], T | None], what: str, context: Callable[[], str] = str) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}\n{context()}")
        time.sleep(0.05)


# The watcher as a process, its log lines and its metrics.


@dataclass
class Metrics:
    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


def parse_metrics(text: str) -> Metrics:
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Metrics(text, samples)


def _json_line(line: str) -> dict[str, Any]:
    try:
        item: dict[str, Any] = json.loads(line)
    except ValueError:
        raise AssertionError(f"not a JSON log line: {line!r}") from None
    return item


@dataclass
class Watch:
    process: subprocess.Popen[Any] | Forked
    stderr_path: Path
    port: int | None

    def log(self) -> str:
        return self.stderr_path.read_text()

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        text = self.log()
        complete = text[: text.rfind("\n") + 1]
        parsed = [_json_line(line) for line in complete.splitlines()]
        return [item for item in parsed if event is None or item["event"] == event]

    def metrics(self) -> Metrics:
        response = httpx.get(f"http://127.0.0.1:{self.port}/metrics", trust_env=False)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse_metrics(response.text)

    def healthz(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", trust_env=False).status_code

    def until(self, check: Callable[[], T | None], what: str) -> T:
        return until(check, what, lambda: f"watch stderr:\n{self.log()}")

    def successes(self) -> float:
        return self.metrics().get("keysync_rounds_total", result="success") or 0.0

    def failures(self) -> float:
        return self.metrics().get("keysync_rounds_total", result="failure") or 0.0

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=DEADLINE)


@dataclass
class Watches:
    started: list[Watch] = field(default_factory=list)

    def start(
        self,
        cwd: Path,
        env: dict[str, str],
        *args: str,
        interval: str = "1s",
        listen: bool = True,
        text_log: bool = False,
    ) -> Watch:
        port = free_port() if listen else None
        argv = ["watch", "--interval", interval, *args]
        if port is not None:
            argv += ["--listen", f"127.0.0.1:{port}"]
        stderr_path = cwd / f"watch-{len(self.started)}.log"
        with stderr_path.open("wb") as stderr:
            process = start_keysync(argv, cwd, env, stdout=subprocess.DEVNULL, stderr=stderr)
        watch = Watch(process, stderr_path, port)
        self.started.append(watch)
        # The start line comes once the signal handlers and the metrics endpoint are in place.
        started = (lambda: " start " in watch.log()) if text_log else (lambda: watch.events("start"))
        watch.until(started, "the start line")
        return watch

    def kill_all(self) -> None:
        for watch in self.started:
            if watch.process.poll() is None:
                watch.process.kill()
            watch.process.wait(timeout=DEADLINE)


@pytest.fixture
def watches() -> Iterator[Watches]:
    started = Watches()
    try:
        yield started
    finally:
        started.kill_all()
