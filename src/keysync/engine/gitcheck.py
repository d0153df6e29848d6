"""Refuses to write secrets into a git work tree unless git ignores the path."""

from __future__ import annotations

import subprocess
from pathlib import Path


def unignored_advice(path: Path, is_directory: bool) -> str | None:
    """None when `path` is outside any work tree or ignored; otherwise the advice to fix it."""
    anchor = _existing_ancestor(path.resolve())
    if not any((parent / ".git").exists() for parent in (anchor, *anchor.parents)):
        return None  # not in a work tree: spare the git subprocesses
    root = _git(anchor, "rev-parse", "--show-toplevel")
    if root is None or root[0] != 0:
        return None
    top = Path(root[1].strip())
    relative = path.resolve().relative_to(top)
    content = relative / ".keysync.json" if is_directory else relative
    lock = relative.with_name(relative.name + ".lock")
    line = f"/{relative.as_posix()}*"  # the sink and the lock beside it
    tracked = _tracked(top, relative, lock)
    if tracked:
        # .gitignore does not stop git from committing changes to a file it already tracks.
        return (
            f"sink path {path} lies in the git work tree {top} and git already tracks {tracked[0]}"
            f"{f' (and {len(tracked) - 1} more)' if len(tracked) > 1 else ''}, ignored or not: "
            f"run `git rm -r --cached {relative.as_posix()}`, commit, and keep the line `{line}` in "
            f"{top / '.gitignore'} (or pass --force)"
        )
    if all(_ignored(top, probe) for probe in (content, lock)):
        return None
    return (
        f"sink path {path} lies in the git work tree {top} and git does not ignore it: "
        f"add the line `{line}` to {top / '.gitignore'} (or pass --force)"
    )


def _tracked(top: Path, *paths: Path) -> list[str]:
    """The files under these paths that git tracks (the index, so a fresh `git add` counts)."""
    answer = _git(top, "ls-files", "-z", "--", *(str(p) for p in paths))
    return [name for name in answer[1].split("\0") if name] if answer and answer[0] == 0 else []


def _ignored(top: Path, probe: Path) -> bool:
    answer = _git(top, "check-ignore", "-q", "--no-index", str(probe))
    return answer is not None and answer[0] == 0


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def _git(cwd: Path, *args: str) -> tuple[int, str] | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout
