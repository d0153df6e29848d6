"""The diff: desired keys, live keys and the sink in; the actions that reconcile them out.

Pure: no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from typing import Literal

from keysync import guards
from keysync.errors import UnsafePlanError, UsageError
from keysync.generations import Claims, Generation, generation_name, group_generations, logical_name
from keysync.guards import Guard
from keysync.keys import LiveKey, SinkView
from keysync.manifest.model import KeySpec, Manifest
from keysync.timefmt import rfc3339

ActionKind = Literal["create", "delete", "replace", "rotate", "retire"]
Reason = Literal[
    "missing",
    "not-in-manifest",
    "secret-missing",
    "secret-stale",
    "rotation-due",
    "requested",
    "superseded",
    "orphaned",
]
NEEDS_FORCE = "needs --force: "  # how a warning names a guard that only --force lifts
_ORDER = {"retire": 0, "delete": 1, "replace": 2, "rotate": 3, "create": 4}
ACTION_KINDS = ("create", "delete", "replace", "rotate", "retire")  # as summaries list them


@dataclass(frozen=True)
class Action:
    """One change. `name` is the manifest's (logical) name; `live` is the key it destroys, and
    `generation` the live name of the key it creates when that is not `name`."""

    action: ActionKind
    name: str
    reason: Reason
    live: LiveKey | None = None
    generation: str | None = None

    @property
    def destroys(self) -> bool:
        return self.action in ("delete", "replace", "retire")

    @property
    def creates(self) -> bool:
        return self.action in ("create", "replace", "rotate")

    @property
    def live_name(self) -> str:
        """The name the created key gets in Coder."""
        return self.generation or self.name

    def sort_key(self) -> tuple[int, str, str]:
        return (_ORDER[self.action], self.name, self.live.name if self.live else "")

    def data(self) -> dict[str, str]:
        item = {"action": self.action, "name": self.name}
        if self.live is not None:  # the live key this action destroys
            item["id"] = self.live.id
            item["key_prefix"] = self.live.key_prefix
            item["live_name"] = self.live.name
        if self.generation is not None:
            item["generation"] = self.generation
        item["reason"] = self.reason
        return item


@dataclass(frozen=True)
class Waiting:
    """A previous generation that replicas may still use: retired once its grace has passed."""

    name: str
    key: LiveKey
    retire_after: datetime

    def data(self) -> dict[str, str | None]:
        seen = self.key.last_seen
        return {
            "name": self.name,
            "live_name": self.key.name,
            "id": self.key.id,
            "last_used_at": rfc3339(seen) if seen else None,  # kept for scripts; last seen
            "last_heartbeat_at": rfc3339(seen) if seen else None,
            "retire_after": rfc3339(self.retire_after),
        }


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    warnings: list[str] = field(default_factory=list)
    stale_records: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)

    def holding_back(self, guards: Collection[Guard]) -> Plan:
        """The plan with more guards, each one said in its warnings as needing --force."""
        warnings = [*self.warnings, *(NEEDS_FORCE + guard.message for guard in guards)]
        return replace(self, warnings=warnings, guards=[*self.guards, *guards])

    def without_forced(self) -> tuple[Plan, list[tuple[Action, Guard]]]:
        """The plan less every action a guard holds back, and those actions with the guard."""
        held = {name: guard for guard in self.guards for name in guard.names}
        kept = [a for a in self.actions if a.name not in held]
        skipped = [(a, held[a.name]) for a in self.actions if a.name in held]
        return Plan(kept, self.warnings, self.stale_records, self.failures, [], self.waiting), skipped

    @property
    def needs_force(self) -> list[str]:
        """Why applying this plan needs --force, one reason per guard that trips."""
        return [guard.message for guard in self.guards]

    @property
    def has_changes(self) -> bool:
        return bool(self.actions or self.stale_records)

    @property
    def applyable(self) -> bool:
        """Apply would carry it out as it stands: no failure, nothing that needs --force."""
        return not self.failures and not self.needs_force

    def summary(self) -> dict[str, int]:
        """How many actions of each kind, every kind listed (zeros included)."""
        counts = dict.fromkeys(ACTION_KINDS, 0)
        for action in self.actions:
            counts[action.action] += 1
        return counts

    def raise_if_unsafe(self, force: bool) -> None:
        if self.needs_force and not force:
            raise UnsafePlanError("refusing to apply without --force: " + "; ".join(self.needs_force))


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for beyond the manifest. `force` retires waiting generations early."""

    targets: frozenset[str] = frozenset()
    replace: frozenset[str] = frozenset()
    force: bool = False

    def covers(self, name: str) -> bool:
        return not self.targets or name in self.targets or logical_name(name) in self.targets


@dataclass
class _Builder:
    manifest: Manifest
    sink: SinkView
    now: datetime
    request: PlanRequest
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)

    def key(self, spec: KeySpec, generations: list[Generation]) -> None:
        if not generations:
            self.actions.append(Action("create", spec.name, "missing"))
            return
        if self.manifest.policy.protects(spec.name):
            self._protected(spec, generations)
            return
        held = self._held(spec.name, generations)
        newest = generations[-1]
        if self._rotation(spec) == "overlap" and held is not None and held.number < newest.number:
            self._retire_orphans(spec, [g for g in generations if g.number > held.number])
            self._retire_previous(spec, [g for g in generations if g.number <= held.number])
            return
        self._retire_previous(spec, generations)
        reason = self._reason(spec, newest, held)
        if reason is not None:
            self._change(spec, generations, reason)

    def _protected(self, spec: KeySpec, generations: list[Generation]) -> None:
        held = self._held(spec.name, generations)
        reason = self._reason(spec, generations[-1], held)
        if reason is not None:
            self.warnings.append(f"{spec.name!r} is protected: not replaced ({reason})")

    def _held(self, name: str, generations: list[Generation]) -> Generation | None:
        """The generation whose secret the sink holds. A sink that cannot be read back holds the
        key whose delivery it confirmed, or for a name it never handled, the newest."""
        if not self.sink.readable:
            if name not in self.sink.delivered:
                return generations[-1]
            delivered = self.sink.delivered[name]
            return next((g for g in generations if g.key.id == delivered), None)
        entry = self.sink.entries.get(name)
        if entry is None:
            return None
        return next((g for g in generations if g.key.key_prefix == entry.secret_prefix), None)

    def _reason(self, spec: KeySpec, newest: Generation, held: Generation | None) -> Reason | None:
        if spec.name in self.request.replace:
            return "requested"
        if held is not newest:
            return "secret-stale" if self.sink.entries.get(spec.name) else "secret-missing"
        return "rotation-due" if self._rotation_due(spec, newest) else None

    def _rotation_due(self, spec: KeySpec, newest: Generation) -> bool:
        rotate_after = self.manifest.rotate_after(spec)
        return rotate_after is not None and self.now - newest.key.created_at >= rotate_after

    def _change(self, spec: KeySpec, generations: list[Generation], reason: Reason) -> None:
        if reason in ("secret-missing", "secret-stale") and not self._admit_missing(spec.name, reason):
            if not self._rotation_due(spec, generations[-1]):
                return
            reason = "rotation-due"
        newest = generations[-1]
        next_name = generation_name(spec.name, newest.number + 1)
        if self._rotation(spec) == "replace":
            live_names = {g.key.name for g in generations[:-1]}
            target = None if spec.name not in live_names else next_name
            self.actions.append(Action("replace", spec.name, reason, newest.key, target))
        elif len(generations) > 1 and reason in ("rotation-due", "requested"):
            self.warnings.append(
                f"{spec.name!r}: rotation ({reason}) waits until the previous generation is retired"
            )
        else:
            self.actions.append(Action("rotate", spec.name, reason, None, next_name))

    def _admit_missing(self, name: str, reason: Reason) -> bool:
        policy = self.manifest.policy.on_missing_secret
        if policy == "keep":
            self.warnings.append(f"{name!r}: {reason}, kept (on_missing_secret: keep)")
        elif policy == "fail":
            self.failures.append(f"{name!r}: {reason} (on_missing_secret: fail)")
        return policy == "replace"

    def _retire_orphans(self, spec: KeySpec, orphans: list[Generation]) -> None:
        """Generations newer than the one the sink holds. One that a replica used within the grace
        has its secret somewhere after all (a restored sink?): it waits like a previous one."""
        grace = self.manifest.overlap_grace(spec)
        for generation in orphans:
            seen = generation.key.last_seen
            if seen is not None and self.now < seen + grace and not self.request.force:
                self.waiting.append(Waiting(spec.name, generation.key, seen + grace))
            else:
                self.actions.append(Action("retire", spec.name, "orphaned", generation.key))

    def _retire_previous(self, spec: KeySpec, generations: list[Generation]) -> None:
        """Every generation but the last one given is previous: retire it once its grace is over."""
        grace = self.manifest.overlap_grace(spec)
        for previous, successor in pairwise(generations):
            seen = previous.key.last_seen
            retire_after = successor.key.created_at + grace
            if seen is not None:
                retire_after = max(retire_after, seen + grace)
            if self.request.force or self.now >= retire_after:
                self.actions.append(Action("retire", spec.name, "superseded", previous.key))
            else:
                self.waiting.append(Waiting(spec.name, previous.key, retire_after))

    def _rotation(self, spec: KeySpec) -> str:
        return spec.rotation or self.manifest.policy.rotation


def build_plan(
    manifest: Manifest,
    live: Iterable[LiveKey],
    sink: SinkView,
    now: datetime,
    coderd_url: str,
    request: PlanRequest = PlanRequest(),
) -> Plan:
    policy = manifest.policy
    live = list(live)
    managed = {key.name: key for key in live if policy.manages(key.name)}
    _check_request(manifest, request)
    groups, extra = group_generations(manifest.names(), managed.values(), generation_claims(manifest, sink))
    builder = _Builder(manifest, sink, now, request)
    for spec in manifest.keys:
        if request.covers(spec.name):
            builder.key(spec, groups[spec.name])
    builder.actions.extend(_extra_actions(manifest, extra, request, builder.warnings))
    warnings = builder.warnings
    warnings.extend(_unknown_targets(manifest, live, request))
    if not sink.readable:
        warnings.append(
            "the sink cannot be read back: plan assumes it holds every secret it confirmed storing"
            " (and, for keys it was never handed, the newest key's)"
        )
    stale = _stale_records(sink, {key.name for key in live}, groups, builder.actions, coderd_url, request)
    warnings.extend(
        f"sink holds a record for {name!r}, whose key no longer exists: apply removes it" for name in stale
    )
    actions = sorted(builder.actions, key=Action.sort_key)
    held_back = _guard_violations(actions, extra, groups, manifest, now)
    return Plan(actions, warnings, stale, builder.failures, [], builder.waiting).holding_back(held_back)


def generation_claims(manifest: Manifest, sink: SinkView) -> Claims:
    """`N-rK` is a generation of `N` only when `N` rotates with overlap or the sink records the key
    as N's; otherwise a hand-made `edge-r7` beside `edge` would be rotated away unseen."""
    overlapping = {
        spec.name for spec in manifest.keys if (spec.rotation or manifest.policy.rotation) == "overlap"
    }

    def claims(base: str, key: LiveKey) -> bool:
        entry = sink.entries.get(base)
        recorded = entry is not None and (entry.id == key.id or entry.secret_prefix == key.key_prefix)
        return base in overlapping or recorded or sink.delivered.get(base) == key.id

    return claims


def _unknown_targets(manifest: Manifest, live: list[LiveKey], request: PlanRequest) -> list[str]:
    known = set(manifest.names()) | {key.name for key in live} | {logical_name(key.name) for key in live}
    unknown = sorted(request.targets - known)
    return [f"--target {name} matches no key in the manifest or in Coder" for name in unknown]


def _check_request(manifest: Manifest, request: PlanRequest) -> None:
    for name in sorted(request.replace):
        if not request.covers(name):
            raise UsageError(f"--replace {name}: not among the --target keys, so it would be ignored")
        if manifest.policy.protects(name):
            raise UnsafePlanError(f"--replace {name}: the key is protected by policy.protect")
        if name not in manifest.names():
            raise UnsafePlanError(f"--replace {name}: no such key in the manifest")


def _extra_actions(
    manifest: Manifest, extra: dict[str, LiveKey], request: PlanRequest, warnings: list[str]
) -> list[Action]:
    actions = []
    for name, key in sorted(extra.items()):
        if not request.covers(name):
            continue
        if manifest.policy.protects(name):
            warnings.append(f"{name!r} is protected: not deleted although the manifest omits it")
        elif manifest.policy.prune:
            actions.append(Action("delete", name, "not-in-manifest", key))
    return actions


def _stale_records(
    sink: SinkView,
    live_names: set[str],
    groups: dict[str, list[Generation]],
    actions: list[Action],
    coderd_url: str,
    request: PlanRequest,
) -> list[str]:
    deleted = {a.name for a in actions if a.action == "delete"}
    return sorted(
        name
        for name, entry in sink.entries.items()
        if entry.coderd_url == coderd_url
        and name not in live_names
        and name not in deleted
        and name not in groups
        and request.covers(name)
    )


def _guard_violations(
    actions: Collection[Action],
    extra: dict[str, LiveKey],
    groups: dict[str, list[Generation]],
    manifest: Manifest,
    now: datetime,
) -> list[Guard]:
    """Each guard that trips, with the names of the actions it holds back."""
    destroyed = [a for a in actions if a.destroys]
    found = [guards.too_many_destroyed([a.name for a in destroyed], manifest.policy.max_deletes)]
    deleted = [a.name for a in actions if a.action == "delete"]
    managed = set(extra) | {name for name, generations in groups.items() if generations}
    if deleted and set(deleted) == managed:
        found.append(guards.every_managed_key(deleted))
    elif deleted and not manifest.keys and manifest.policy.prune:
        found.append(guards.empty_manifest(deleted))
    for action in destroyed:
        if action.action == "retire" or action.reason == "requested" or action.live is None:
            continue
        if action.live.in_use(now):
            found.append(guards.in_use(action.name, action.action))
    return [guard for guard in found if guard is not None]
