"""The protocol every sink implements, built-in or installed through `keysync.sinks`."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from keysync.keys import SecretRecord, SinkView


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know of the run: relative paths resolve against `base_dir`."""

    base_dir: Path
    coderd_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


class Sink(Protocol):
    """A place that stores one secret record per key name.

    `store` returns only once the record is durable. `read` returns what plan needs, never
    secrets. Methods raise `keysync.errors.SinkError` with a one-line message.
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
