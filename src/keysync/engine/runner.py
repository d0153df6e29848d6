"""A CI runner's disk does not outlive its job: what plan and apply say when a `file` or
`directory` sink writes the secrets there."""

from __future__ import annotations

from collections.abc import Mapping

from keysync.engine.session import Session

DISK_SINKS = ("file", "directory")  # the exec sink's journal holds no secret


def in_ci(environ: Mapping[str, str]) -> bool:
    """`CI=true`, as GitHub Actions, GitLab CI and most others set it."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def runner_disk_warnings(session: Session, environ: Mapping[str, str]) -> list[str]:
    kind = session.loaded.manifest.sink.type
    if kind not in DISK_SINKS or not in_ci(environ):
        return []
    paths = session.sink.local_paths()
    where = f" ({paths[0]})" if paths else ""
    return [
        f"CI is set and the {kind} sink keeps the secrets on this runner's disk{where}: they are lost "
        "when the job ends unless that path is kept (a cache, an artifact, a volume), and a later "
        "job finds none and plans to replace every key; a vault or kubernetes sink outlives the job"
    ]
