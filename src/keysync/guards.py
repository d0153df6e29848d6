"""The guards that hold an apply back until `--force`, as values.

Each guard that trips is a `Guard`: a fixed `code` that metrics and JSON carry (never a key name
or a count, which would make every label unique), a `message` for people, and the names of the
actions it holds back. `protect` is not among them: nothing lifts it, so it is a plan failure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

GuardCode = Literal["max-deletes", "all-managed", "empty-keys", "in-use", "git-rail", "foreign-secret"]


@dataclass(frozen=True)
class Guard:
    code: GuardCode
    message: str
    names: tuple[str, ...] = ()

    def data(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "names": list(self.names)}


def too_many_destroyed(destroyed: Sequence[str], limit: int) -> Guard | None:
    if len(destroyed) <= limit:
        return None
    message = f"{len(destroyed)} keys would be destroyed, more than max_deletes ({limit})"
    return Guard("max-deletes", message, tuple(destroyed))


def every_managed_key(deleted: Sequence[str]) -> Guard:
    return Guard("all-managed", f"every managed key would be deleted ({len(deleted)})", tuple(deleted))


def empty_manifest(deleted: Sequence[str]) -> Guard:
    message = f"the manifest lists no keys and prune would delete {len(deleted)}"
    return Guard("empty-keys", message, tuple(deleted))


def in_use(name: str, action: str) -> Guard:
    return Guard("in-use", f"{name!r} had a heartbeat in the last 10 minutes ({action})", (name,))


def git_rail(problems: Collection[str]) -> list[Guard]:
    """A sink path git would track holds back the whole apply, not one action."""
    return [Guard("git-rail", problem) for problem in problems]
