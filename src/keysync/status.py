"""The rows of `keysync status`: each live key and what the sink holds for it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from keysync.generations import group_generations
from keysync.keys import LiveKey, SinkView
from keysync.manifest.model import Manifest
from keysync.plan import generation_claims
from keysync.timefmt import age, relative, rfc3339


def sink_state(key: LiveKey, logical: str, view: SinkView) -> str:
    """held, previous (the sink holds a newer generation), missing, stale or unknown."""
    if not view.readable:
        if logical not in view.delivered:
            return "unknown"
        delivered = view.delivered[logical]
        if key.id == delivered:
            return "held"
        return "stale" if delivered else "missing"
    entry = view.entries.get(logical)
    if entry is None:
        return "missing"
    if entry.secret_prefix == key.key_prefix:
        return "held"
    return "previous" if logical != key.name else "stale"


def key_rows(
    manifest: Manifest, live: Iterable[LiveKey], view: SinkView, now: datetime
) -> list[dict[str, Any]]:
    keys = list(live)
    groups, _ = group_generations(manifest.names(), keys, generation_claims(manifest, view))
    logical = {g.key.name: name for name, generations in groups.items() for g in generations}
    rows = []
    for key in keys:
        name = logical.get(key.name, key.name)
        seen = key.last_seen
        state = sink_state(key, name, view)
        if state == "stale" and len(groups.get(name, [])) > 1:
            state = "previous"
        rows.append(
            {
                "name": key.name,
                "logical_name": name,
                "id": key.id,
                "key_prefix": key.key_prefix,
                "created_at": rfc3339(key.created_at),
                # Coder's newest servers say last_heartbeat_at; both mean "last seen" here.
                "last_used_at": rfc3339(seen) if seen else None,
                "last_heartbeat_at": rfc3339(seen) if seen else None,
                "sink": "ignored" if not manifest.policy.manages(key.name) else state,
                "in_manifest": name in groups,
                "in_use": key.in_use(now),
            }
        )
    return sorted(rows, key=lambda row: (row["logical_name"], row["created_at"]))


def render_rows(rows: list[dict[str, Any]], now: datetime, markdown: bool = False) -> str:
    if not rows:
        return "No keys in Coder."
    table = [("NAME", "KEY", "KEY PREFIX", "AGE", "LAST HEARTBEAT", "SINK", "MANIFEST")]
    for row in rows:
        seen = row["last_used_at"]
        table.append(
            (
                row["name"],
                row["logical_name"],
                row["key_prefix"],
                age(datetime.fromisoformat(row["created_at"]), now),
                relative(datetime.fromisoformat(seen), now) if seen else "never",
                row["sink"],
                "listed" if row["in_manifest"] else "not listed",
            )
        )
    if markdown:
        lines = ["| " + " | ".join(cells) + " |" for cells in table]
        return "\n".join([lines[0], "|" + "---|" * len(table[0]), *lines[1:]])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
