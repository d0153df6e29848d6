"""The JSON form of a plan, its fingerprints, and what changed since a saved one."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keysync import __version__
from keysync.errors import StalePlanError
from keysync.keys import LiveKey, SinkView
from keysync.plan import NEEDS_FORCE, Plan, PlanRequest
from keysync.timefmt import rfc3339

FORMAT_VERSION = 1
MAX_PLAN_BYTES = 256 << 20  # a 100,000-key plan with its snapshot is some tens of MiB


@dataclass(frozen=True)
class World:
    """Everything a plan was made from, reduced to what fingerprints cover."""

    coderd_url: str
    api: str
    manifest_sha256: str
    live: dict[str, dict[str, str]]
    sink: dict[str, dict[str, str]]

    @classmethod
    def of(
        cls,
        coderd_url: str,
        api: str,
        manifest_sha256: str,
        live: Iterable[LiveKey],
        sink: SinkView,
    ) -> World:
        return cls(
            coderd_url,
            api,
            manifest_sha256,
            {
                k.name: {
                    "id": k.id,
                    "key_prefix": k.key_prefix,
                    "created_at": rfc3339(k.created_at),
                }
                for k in live
            },
            {e.name: {"id": e.id, "key_prefix": e.key_prefix} for e in sink.entries.values()},
        )

    @property
    def live_fingerprint(self) -> str:
        return _digest(self.live)

    @property
    def sink_fingerprint(self) -> str:
        return _digest(self.sink)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def plan_document(plan: Plan, world: World, request: PlanRequest, snapshot: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "keysync_version": __version__,
        "coderd_url": world.coderd_url,
        "api": world.api,
        "manifest_sha256": world.manifest_sha256,
        "live_fingerprint": world.live_fingerprint,
        "sink_fingerprint": world.sink_fingerprint,
        "targets": sorted(request.targets),
        "replace": sorted(request.replace),
        "actions": [action.data() for action in plan.actions],
        "summary": plan.summary(),
        "applyable": plan.applyable,
        "needs_force": [guard.data() for guard in plan.guards],
        "warnings": plan.warnings,
        "waiting": [waiting.data() for waiting in plan.waiting],
    }
    if plan.stale_records:
        document["stale_records"] = plan.stale_records
    if snapshot:
        document["snapshot"] = {"live": world.live, "sink": world.sink}
    return document


_PLAN_TEXT_FIELDS = ("coderd_url", "api", "manifest_sha256", "live_fingerprint", "sink_fingerprint")
_ACTION_TEXT_FIELDS = ("action", "name", "reason")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class SavedAction:
    action: str
    name: str
    reason: str
    live_name: str = ""

    @property
    def described(self) -> str:
        return _described(self.action, self.name, self.live_name, self.reason)


@dataclass(frozen=True)
class SavedPlan:
    """A plan as `plan --out` wrote it, read back for `apply PLANFILE`."""

    coderd_url: str
    api: str
    manifest_sha256: str
    live_fingerprint: str
    sink_fingerprint: str
    request: PlanRequest
    actions: tuple[SavedAction, ...]
    stale_records: tuple[str, ...]
    applyable: bool
    snapshot_live: dict[str, dict[str, str]] | None = None
    snapshot_sink: dict[str, dict[str, str]] | None = None

    @classmethod
    def of(cls, document: dict[str, Any]) -> SavedPlan:
        """From a document whose shape `parse_saved_plan` has checked."""
        snapshot = document.get("snapshot")
        fields = ("action", "name", "reason", "live_name")
        return cls(
            coderd_url=document["coderd_url"],
            api=document["api"],
            manifest_sha256=document["manifest_sha256"],
            live_fingerprint=document["live_fingerprint"],
            sink_fingerprint=document["sink_fingerprint"],
            request=PlanRequest(frozenset(document["targets"]), frozenset(document["replace"])),
            actions=tuple(SavedAction(*(a.get(f, "") for f in fields)) for a in document["actions"]),
            stale_records=tuple(document.get("stale_records", [])),
            applyable=document.get("applyable", _applyable_from_warnings(document.get("warnings", []))),
            snapshot_live=snapshot.get("live") if isinstance(snapshot, dict) else None,
            snapshot_sink=snapshot.get("sink") if isinstance(snapshot, dict) else None,
        )


def parse_saved_plan(raw: bytes) -> SavedPlan:
    """The saved plan in `raw`, its shape checked as far as apply reads it; raises ValueError
    naming the first thing wrong. A plan file may be damaged, or edited by hand."""
    try:
        document = json.loads(raw)
    except RecursionError:
        raise ValueError("not a keysync plan: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not a readable keysync plan ({exc})") from None
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a keysync plan (format_version {FORMAT_VERSION})")
    problem = _control_character(document) or _shape_problem(document)
    if problem:
        raise ValueError(f"not a keysync plan: {problem}")
    return SavedPlan.of(document)


def _applyable_from_warnings(warnings: list[str]) -> bool:
    """For a plan saved before `applyable` was written: failures were not saved, and apply
    recomputes and refuses them anyway; what needed --force is in its warnings."""
    return not any(warning.startswith(NEEDS_FORCE) for warning in warnings)


def _control_character(document: Any) -> str | None:
    """Where a string holds a line break or a terminal control character (iteratively: the
    nesting is the file's to choose)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        texts: list[str] = [value] if isinstance(value, str) else []
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
            texts = list(value)  # JSON keys are strings
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
        if any(_CONTROL.search(text) for text in texts):
            return f"{where or 'a key'}: holds a control character"
    return None


def _shape_problem(document: dict[str, Any]) -> str | None:
    for field in _PLAN_TEXT_FIELDS:
        if not isinstance(document.get(field), str):
            return f"{field}: not a string"
    if not isinstance(document.get("applyable", False), bool):
        return "applyable: not true or false"
    fields = (("targets", True), ("replace", True), ("stale_records", False), ("warnings", False))
    for field, required in fields:
        value = document.get(field, None if required else [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"{field}: not a list of strings"
    actions = document.get("actions")
    if not isinstance(actions, list):
        return "actions: not a list"
    for index, action in enumerate(actions):
        if not isinstance(action, dict):
            return f"actions[{index}]: not an object"
        for field in _ACTION_TEXT_FIELDS:
            if not isinstance(action.get(field), str):
                return f"actions[{index}].{field}: not a string"
        if not isinstance(action.get("live_name", ""), str):
            return f"actions[{index}].live_name: not a string"
    return _snapshot_problem(document.get("snapshot"))


def _snapshot_problem(snapshot: Any) -> str | None:
    if snapshot is None:
        return None
    if not isinstance(snapshot, dict):
        return "snapshot: not an object"
    for part in ("live", "sink"):
        records = snapshot.get(part, {})
        if not isinstance(records, dict):
            return f"snapshot.{part}: not an object"
        for name, record in records.items():
            if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
                return f"snapshot.{part}.{name}: not an object of strings"
    return None


def check_saved_plan(saved: SavedPlan, current: World) -> None:
    """Raises StalePlanError explaining every difference between the saved plan's world and now."""
    reasons = []
    for field in ("coderd_url", "api"):
        if getattr(saved, field) != getattr(current, field):
            reasons.append(f"{field} was {getattr(saved, field)!r}, now {getattr(current, field)!r}")
    if saved.manifest_sha256 != current.manifest_sha256:
        reasons.append("the manifest changed")
    if saved.live_fingerprint != current.live_fingerprint:
        reasons.append("the live keys changed: " + _explain(saved.snapshot_live, current.live))
    if saved.sink_fingerprint != current.sink_fingerprint:
        reasons.append("the sink changed: " + _explain(saved.snapshot_sink, current.sink))
    if reasons:
        raise StalePlanError(
            "the saved plan no longer matches the world, nothing was changed: "
            + "; ".join(reasons)
            + ". Run `keysync plan` again."
        )


def _described(action: str, name: str, live_name: str, reason: str) -> str:
    """'delete gw (orphaned)', or 'retire gw: gw-r1 (superseded)' when the live key is another."""
    destroyed = f": {live_name}" if live_name and live_name != name else ""
    return f"{action} {name}{destroyed} ({reason})"


def check_saved_actions(saved: SavedPlan, plan: Plan) -> None:
    """Refuses when the actions differ from the reviewed ones, even in an unchanged world: time
    alone makes rotations due and grace periods end."""
    reviewed = {action.described for action in saved.actions}
    now = {_described(a.action, a.name, a.live.name if a.live else "", a.reason) for a in plan.actions}
    reasons = [f"now also {text}" for text in sorted(now - reviewed)]
    reasons += [f"no longer {text}" for text in sorted(reviewed - now)]
    if sorted(saved.stale_records) != plan.stale_records:
        reasons.append("the stale sink records to remove differ")
    if reasons:
        raise StalePlanError(
            "the plan is no longer the one reviewed, nothing was changed: "
            + "; ".join(reasons)
            + ". Run `keysync plan` again."
        )


def _explain(before: dict[str, dict[str, str]] | None, after: dict[str, dict[str, str]]) -> str:
    if not isinstance(before, dict):
        return "the plan file has no snapshot to compare"
    parts = []
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    if added:
        parts.append("appeared " + ", ".join(added))
    if removed:
        parts.append("vanished " + ", ".join(removed))
    changed = [
        _changed_fields(name, before[name], after[name]) for name in sorted(before.keys() & after.keys())
    ]
    changed = [text for text in changed if text]
    if changed:
        parts.append("changed " + ", ".join(changed))
    return ", ".join(parts) or "contents differ"


def _changed_fields(name: str, before: Any, after: dict[str, str]) -> str:
    """'gw (key_prefix abc -> xyz)' for a key whose recorded fields differ, else ''."""
    from deepdiff import DeepDiff

    diff = DeepDiff(before, after, view="tree")
    fields = []
    for kind in ("values_changed", "type_changes", "dictionary_item_added", "dictionary_item_removed"):
        for item in diff.get(kind, []):
            path = item.path(output_format="list")
            field = str(path[0]) if path else "record"
            fields.append(f"{field} {item.t1!s} -> {item.t2!s}" if kind == "values_changed" else field)
    return f"{name} ({'; '.join(fields)})" if fields else ""
