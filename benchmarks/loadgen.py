"""The bare httpx baseline: N threads sharing one httpx.Client, POSTing creates, counting failures."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from harness import COLLECTION, TOKEN


@dataclass
class LoadResult:
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of this whole process while the loop ran
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def post_creates(
    url: str, names: Sequence[str], threads: int, new_connections: bool = False, timeout: float = 30.0
) -> LoadResult:
    """Creates every name once; `new_connections` closes each connection after its request."""
    headers = {"Coder-Session-Token": TOKEN, "Accept": "application/json"}
    if new_connections:
        headers["Connection"] = "close"
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    result = LoadResult()
    pending = iter(names)
    lock = threading.Lock()

    def worker(client: httpx.Client) -> None:
        while True:
            with lock:
                name = next(pending, None)
            if name is None:
                return
            try:
                status = client.post(COLLECTION, json={"name": name}).status_code
                outcome = "ok" if status == 201 else f"HTTP {status}"
            except httpx.HTTPError as exc:  # resets show up as ReadError / RemoteProtocolError
                outcome = type(exc).__name__
            with lock:
                if outcome == "ok":
                    result.ok += 1
                else:
                    result.failures[outcome] += 1

    with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=timeout) as client:
        workers = [threading.Thread(target=worker, args=(client,), daemon=True) for _ in range(threads)]
        started, cpu_started = time.perf_counter(), time.process_time()
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout + len(names))  # bounded: every request has its own timeout
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu_started
    return result


def list_seconds(url: str, timeout: float = 120.0) -> float:
    """How long the server takes to answer one list of every key (attribution for plan time)."""
    headers = {"Coder-Session-Token": TOKEN}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
        client.get(COLLECTION).raise_for_status()  # warm the connection
        started = time.perf_counter()
        client.get(COLLECTION).raise_for_status()
        return time.perf_counter() - started
