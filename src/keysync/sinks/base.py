"""The protocol every sink implements, built-in or installed through `keysync.sinks`.

This module is the public API for sink plugins: the names in `__all__` (the protocol, its
context, the record types and the errors a sink raises) keep their meaning within a major
version, and a plugin needs to import nothing else of keysync's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from keysync.errors import LockHeldError, SinkError, SinkRefusedError
from keysync.keys import SecretRecord, SinkView, StoredEntry
from keysync.plan import Action
from keysync.secret import Secret

__all__ = [
    "LockHeldError",
    "Secret",
    "SecretRecord",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkRefusedError",
    "SinkView",
    "StoredEntry",
]


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know of the run: relative paths resolve against `base_dir`."""

    base_dir: Path
    coderd_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    force: bool = False  # apply --force: a sink may adopt what it would otherwise refuse

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


class Sink(Protocol):
    """A place that stores one secret record per key name.

    `store` returns only once the record is durable. `read` returns what plan needs, never
    secrets. Methods raise `keysync.errors.SinkError` with a one-line message. A sink may also
    define `check_ready()`: the read-only part of `check_writable`, which plan runs as apply's
    preflight (it must change nothing anywhere). `prepare(actions)` runs once before apply
    starts its actions: it records what the sink needs to notice a delivery cut short (the exec
    journal) and returns, by name, the keys it refuses (a file it did not write), which then fail
    untouched. Two more optional hooks: `review_plan(plan, live)`
    returns the plan with what only the sink can know added (warnings, held-back actions), for
    plan and apply alike; `after_apply(written)` runs once an apply's actions are done, with the names
    whose secret changed, and returns (line, ok) notes for the report (a line not ok fails the
    apply: the kubernetes sink's rollouts). An `endpoint_warnings` list attribute holds what
    plan warns about where credentials go (`keysync.hosts.env_endpoint`). apply calls `store`
    and `remove` one at a time, unless the class sets `concurrent_writes = True` to say they may
    run in several threads at once (as every built-in sink does).
    """

    config_model: ClassVar[type[BaseModel]]

    def __init__(self, config: Any, context: SinkContext) -> None: ...

    def describe(self) -> str: ...

    def read(self) -> SinkView: ...

    def check_writable(self) -> None: ...

    def store(self, record: SecretRecord) -> None: ...

    def remove(self, name: str, key_id: str = "") -> None: ...

    def lock(self, timeout: float | None) -> AbstractContextManager[None]: ...

    def local_paths(self) -> list[Path]: ...

    def close(self) -> None: ...


class OneWriteAtATime:
    """A sink whose `store` and `remove` never overlap: a plugin written without threads in mind
    must not lose a record to a parallel apply."""

    config_model: ClassVar[type[BaseModel]] = BaseModel  # the wrapped sink's class has the real one

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._writing = threading.Lock()

    def describe(self) -> str:
        return self._sink.describe()

    def read(self) -> SinkView:
        return self._sink.read()

    def check_writable(self) -> None:
        self._sink.check_writable()

    def check_ready(self) -> None:
        check = getattr(self._sink, "check_ready", None)
        if check is not None:
            check()

    def prepare(self, actions: Sequence[Action]) -> dict[str, str]:
        prepare = getattr(self._sink, "prepare", None)
        return dict(prepare(actions)) if prepare is not None else {}

    def store(self, record: SecretRecord) -> None:
        with self._writing:
            self._sink.store(record)

    def remove(self, name: str, key_id: str = "") -> None:
        with self._writing:
            self._sink.remove(name, key_id)

    def lock(self, timeout: float | None) -> AbstractContextManager[None]:
        return self._sink.lock(timeout)

    def local_paths(self) -> list[Path]:
        return self._sink.local_paths()

    def close(self) -> None:
        self._sink.close()
