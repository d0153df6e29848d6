"""The diff: desired keys, live keys and the sink in; the actions that reconcile them out.

Pure: no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from keysync.errors import UnsafePlanError
from keysync.keys import LiveKey, SinkView, StoredEntry
from keysync.manifest import KeySpec, Manifest

ActionKind = Literal["create", "delete", "replace"]
Reason = Literal["missing", "not-in-manifest", "secret-missing", "secret-stale", "rotation-due", "requested"]
_ORDER = {"delete": 0, "replace": 1, "create": 2}


@dataclass(frozen=True)
class Action:
    action: ActionKind
    name: str
    reason: Reason
    live: LiveKey | None = None

    @property
    def destroys(self) -> bool:
        return self.action in ("delete", "replace")

    def sort_key(self) -> tuple[int, str]:
        return (_ORDER[self.action], self.name)

    def data(self) -> dict[str, str]:
        item = {"action": self.action, "name": self.name}
        if self.live is not None:
            item["id"] = self.live.id
            item["key_prefix"] = self.live.key_prefix
        item["reason"] = self.reason
        return item


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    warnings: list[str] = field(default_factory=list)
    needs_force: list[str] = field(default_factory=list)
    stale_records: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    guards: dict[str, list[str]] = field(default_factory=dict)

    def without_forced(self) -> tuple[Plan, list[tuple[Action, str]]]:
        """The plan less every action a guard holds back, and those actions with the guard."""
        held = {name: reason for reason, names in self.guards.items() for name in names}
        kept = [a for a in self.actions if a.name not in held]
        skipped = [(a, held[a.name]) for a in self.actions if a.name in held]
        return Plan(kept, self.warnings, [], self.stale_records, self.failures), skipped

    @property
    def has_changes(self) -> bool:
        return bool(self.actions or self.stale_records)

    def summary(self) -> dict[str, int]:
        counts = {"create": 0, "delete": 0, "replace": 0}
        for action in self.actions:
            counts[action.action] += 1
        return counts

    def raise_if_unsafe(self, force: bool) -> None:
        if self.needs_force and not force:
            raise UnsafePlanError("refusing to apply without --force: " + "; ".join(self.needs_force))


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for beyond the manifest."""

    targets: frozenset[str] = frozenset()
    replace: frozenset[str] = frozenset()

    def covers(self, name: str) -> bool:
        return not self.targets or name in self.targets


def build_plan(
    manifest: Manifest,
    live: Iterable[LiveKey],
    sink: SinkView,
    now: datetime,
    coderd_url: str,
    request: PlanRequest = PlanRequest(),
) -> Plan:
    policy = manifest.policy
    managed = {key.name: key for key in live if not policy.ignores(key.name)}
    _check_request(manifest, request)
    warnings: list[str] = []
    failures: list[str] = []
    actions: list[Action] = []
    for spec in manifest.keys:
        if request.covers(spec.name):
            action = _desired_action(manifest, spec, managed.get(spec.name), sink, now, request)
            actions.extend(_admit(action, manifest, warnings, failures))
    actions.extend(_extra_actions(manifest, managed, request, warnings))
    if not sink.readable:
        warnings.append("the sink cannot be read back: plan assumes it holds every secret")
    stale = _stale_records(sink, managed, actions, coderd_url, request)
    warnings.extend(
        f"sink holds a record for {name!r}, whose key no longer exists: apply removes it" for name in stale
    )
    actions.sort(key=Action.sort_key)
    guards = _guard_violations(actions, managed, manifest, now)
    warnings.extend(f"needs --force: {reason}" for reason in guards)
    return Plan(actions, warnings, list(guards), stale, failures, guards)


def _check_request(manifest: Manifest, request: PlanRequest) -> None:
    for name in sorted(request.replace):
        if manifest.policy.protects(name):
            raise UnsafePlanError(f"--replace {name}: the key is protected by policy.protect")
        if name not in manifest.names():
            raise UnsafePlanError(f"--replace {name}: no such key in the manifest")


def _desired_action(
    manifest: Manifest,
    spec: KeySpec,
    live: LiveKey | None,
    sink: SinkView,
    now: datetime,
    request: PlanRequest,
) -> Action | None:
    if live is None:
        return Action("create", spec.name, "missing")
    if spec.name in request.replace:
        return Action("replace", spec.name, "requested", live)
    secret_reason = _secret_problem(sink, live)
    if secret_reason is not None:
        return Action("replace", spec.name, secret_reason, live)
    rotate_after = manifest.rotate_after(spec)
    if rotate_after is not None and now - live.created_at >= rotate_after:
        return Action("replace", spec.name, "rotation-due", live)
    return None


def _secret_problem(sink: SinkView, live: LiveKey) -> Reason | None:
    if not sink.readable:
        return None
    entry: StoredEntry | None = sink.entries.get(live.name)
    if entry is None:
        return "secret-missing"
    if entry.secret_prefix != live.key_prefix:
        return "secret-stale"
    return None


def _admit(
    action: Action | None, manifest: Manifest, warnings: list[str], failures: list[str]
) -> list[Action]:
    """Applies protect and on_missing_secret to a proposed action."""
    if action is None or action.action == "create":
        return [action] if action else []
    policy = manifest.policy
    if policy.protects(action.name):
        warnings.append(f"{action.name!r} is protected: not replaced ({action.reason})")
        return []
    if action.reason in ("secret-missing", "secret-stale"):
        if policy.on_missing_secret == "keep":
            warnings.append(f"{action.name!r}: {action.reason}, kept (on_missing_secret: keep)")
            return []
        if policy.on_missing_secret == "fail":
            failures.append(f"{action.name!r}: {action.reason} (on_missing_secret: fail)")
            return []
    return [action]


def _extra_actions(
    manifest: Manifest, managed: dict[str, LiveKey], request: PlanRequest, warnings: list[str]
) -> list[Action]:
    desired = set(manifest.names())
    actions = []
    for name, key in sorted(managed.items()):
        if name in desired or not request.covers(name):
            continue
        if manifest.policy.protects(name):
            warnings.append(f"{name!r} is protected: not deleted although the manifest omits it")
        elif manifest.policy.prune:
            actions.append(Action("delete", name, "not-in-manifest", key))
    return actions


def _stale_records(
    sink: SinkView,
    managed: dict[str, LiveKey],
    actions: list[Action],
    coderd_url: str,
    request: PlanRequest,
) -> list[str]:
    created = {a.name for a in actions if a.action == "create"}
    return sorted(
        name
        for name, entry in sink.entries.items()
        if entry.coderd_url == coderd_url
        and name not in managed
        and name not in created
        and request.covers(name)
    )


def _guard_violations(
    actions: Collection[Action], managed: dict[str, LiveKey], manifest: Manifest, now: datetime
) -> dict[str, list[str]]:
    """Each guard that trips, mapped to the names of the actions it holds back."""
    violations: dict[str, list[str]] = {}
    destroyed = [a for a in actions if a.destroys]
    limit = manifest.policy.max_deletes
    if len(destroyed) > limit:
        message = f"{len(destroyed)} keys would be destroyed, more than max_deletes ({limit})"
        violations[message] = [a.name for a in destroyed]
    deleted = [a.name for a in actions if a.action == "delete"]
    if deleted and set(deleted) == set(managed):
        violations[f"every managed key would be deleted ({len(deleted)})"] = deleted
    for action in destroyed:
        if action.reason != "requested" and action.live is not None and action.live.in_use(now):
            violations[f"{action.name!r} was used in the last 10 minutes ({action.action})"] = [action.name]
    return violations
