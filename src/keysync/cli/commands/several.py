"""plan and status over several manifests (-f given more than once), as one repository holding
several deployments runs them: a section per manifest on stdout, in JSON a list of one object per
manifest; a manifest that fails is reported in its section and does not stop the others."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysync.cli import console

EXIT_FAILED = 1


@dataclass(frozen=True)
class Section:
    path: Path
    code: int  # 0, EXIT_FAILED, or plan's exit code for changes pending
    text: str = ""  # the text or Markdown output
    document: dict[str, Any] = field(default_factory=dict)  # the JSON output


def each(paths: Sequence[Path], one: Callable[[Path], Section]) -> list[Section]:
    from keysync.errors import KeysyncError, ManifestError

    sections = []
    for path in paths:
        try:
            sections.append(one(path))
        except KeysyncError as exc:
            lines = str(exc).splitlines() or [type(exc).__name__]
            where = "" if isinstance(exc, ManifestError) else f"{path}: "  # its lines name the file
            for line in lines:
                console.err(f"keysync: error: {where}{line}")
            sections.append(Section(path, EXIT_FAILED, f"Failed: {lines[0]}", {"error": "\n".join(lines)}))
    return sections


def write(sections: Sequence[Section], output_format: str) -> None:
    if output_format == "json":
        from keysync.plandoc import FORMAT_VERSION

        documents = [
            {"manifest": str(s.path), "format_version": FORMAT_VERSION, **s.document} for s in sections
        ]
        console.out(json.dumps(documents, indent=2))
        return
    heading = "## `{}`" if output_format == "markdown" else "=== {} ==="
    console.out("\n\n".join(f"{heading.format(s.path)}\n\n{s.text.rstrip()}" for s in sections))


def exit_code(sections: Sequence[Section]) -> int:
    """1 when any manifest failed; else the highest (2: one has changes pending); else 0."""
    codes = {section.code for section in sections}
    return EXIT_FAILED if EXIT_FAILED in codes else max(codes, default=0)
