"""What an apply did: one outcome per action, and the report that gathers them. Pure values."""

from __future__ import annotations

from dataclasses import dataclass, field

from keysync.keys import LiveKey
from keysync.plan import ACTION_KINDS, Action


@dataclass(frozen=True)
class Outcome:
    action: Action
    error: str | None = None
    created: LiveKey | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def data(self) -> dict[str, object]:
        item: dict[str, object] = {**self.action.data(), "result": "ok" if self.ok else "failed"}
        if self.created is not None:
            item["new_id"] = self.created.id
            item["new_key_prefix"] = self.created.key_prefix
        if self.error:
            item["error"] = self.error
        return item


@dataclass
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    not_started: list[Action] = field(default_factory=list)
    cleanup_errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)  # what the sink did after the actions (rollouts)
    sink_failure: str | None = None  # the failed sink write that stopped the apply, if one did

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def succeeded(self) -> bool:
        return not self.failed and not self.not_started and not self.cleanup_errors

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ACTION_KINDS, 0)
        for outcome in self.outcomes:
            if outcome.ok:
                counts[outcome.action.action] += 1
        return {**counts, "failed": len(self.failed)}
