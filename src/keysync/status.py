"""The rows of `keysync status`: each live key and what the sink holds for it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from keysync.keys import LiveKey, SinkView
from keysync.manifest import Manifest
from keysync.timefmt import age, relative, rfc3339


def sink_state(key: LiveKey, view: SinkView) -> str:
    if not view.readable:
        return "unknown"
    entry = view.entries.get(key.name)
    if entry is None:
        return "missing"
    return "held" if entry.secret_prefix == key.key_prefix else "stale"


def key_rows(
    manifest: Manifest, live: Iterable[LiveKey], view: SinkView, now: datetime
) -> list[dict[str, Any]]:
    desired = set(manifest.names())
    rows = []
    for key in live:
        ignored = manifest.policy.ignores(key.name)
        seen = key.last_seen
        rows.append(
            {
                "name": key.name,
                "id": key.id,
                "key_prefix": key.key_prefix,
                "created_at": rfc3339(key.created_at),
                "last_used_at": rfc3339(seen) if seen else None,
                "sink": "ignored" if ignored else sink_state(key, view),
                "in_manifest": key.name in desired,
                "in_use": key.in_use(now),
            }
        )
    return rows


def render_rows(rows: list[dict[str, Any]], now: datetime) -> str:
    if not rows:
        return "No keys in Coder."
    table = [("NAME", "KEY PREFIX", "AGE", "LAST USED", "SINK", "MANIFEST")]
    for row in rows:
        table.append(
            (
                row["name"],
                row["key_prefix"],
                age(datetime.fromisoformat(row["created_at"]), now),
                relative(datetime.fromisoformat(row["last_used_at"]), now)
                if row["last_used_at"]
                else "never",
                row["sink"],
                "listed" if row["in_manifest"] else "not listed",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table
    )
