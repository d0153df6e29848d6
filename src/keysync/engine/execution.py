"""What an apply is, once: the git rail, the sink lock, the plan and its review, the sink
preflight, the actions with their audit trail, and the sink's step after them. `apply` and
`watch` both run `apply_sequence` and only present what it returns; no terminal, no click."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from keysync.engine.applier import Applier
from keysync.engine.session import Session, Snapshot
from keysync.errors import KeysyncError, UnsafePlanError
from keysync.outcomes import ApplyReport, Outcome
from keysync.plan import Plan, PlanRequest

if TYPE_CHECKING:
    from keysync.plandoc import SavedPlan


class Review(Protocol):
    """The caller's say at the sequence's three moments."""

    def planned(self, snapshot: Snapshot, plan: Plan) -> None:
        """The plan as made, before anything can refuse it."""

    def choose(self, snapshot: Snapshot, plan: Plan) -> Plan:
        """The actions to carry out (a plan without changes: nothing is done); raises to refuse."""

    def finished(self, outcome: Outcome) -> None:
        """One action done; called from the applier's threads."""


@dataclass(frozen=True)
class ApplyRun:
    request: PlanRequest = field(default_factory=PlanRequest)
    force: bool = False
    saved: SavedPlan | None = None  # apply PLANFILE: refused unless the world and actions still match
    take_lock: bool = True  # false for a watch leader, which holds the lock already
    lock_timeout: float | None = None
    audit_path: Path | None = None


@dataclass(frozen=True)
class Applied:
    """What one run of the sequence planned and did."""

    plan: Plan  # as planned, the endpoint warnings included
    carried_out: Plan  # what the review chose; without changes, nothing was done
    report: ApplyReport
    audit_error: str | None = None  # the trail broke: the actions before it are done and kept
    applyable: bool = True  # false when --force lifted a guard or the git rail

    @property
    def changed_anything(self) -> bool:
        return self.carried_out.has_changes


def apply_sequence(session: Session, run: ApplyRun, review: Review, stop: threading.Event) -> Applied:
    check_git(session, run.force)  # before the lock, which would sit in the work tree too
    applied: Applied | None = None
    try:
        with session.sink.lock(run.lock_timeout) if run.take_lock else nullcontext():
            applied = _apply_locked(session, run, review, stop)
    except KeysyncError as exc:
        if applied is None:
            raise
        applied.report.cleanup_errors.append(f"releasing the sink lock: {exc}")  # the report still shows
    return applied


def _apply_locked(session: Session, run: ApplyRun, review: Review, stop: threading.Event) -> Applied:
    snapshot = session.snapshot(run.request)
    plan = replace(snapshot.plan, warnings=[*session.url_warnings(), *snapshot.plan.warnings])
    if run.saved is not None:
        from keysync.plandoc import check_saved_actions, check_saved_plan

        check_saved_plan(run.saved, snapshot.world)
        check_saved_actions(run.saved, plan)
    review.planned(snapshot, plan)
    if plan.failures:
        raise KeysyncError("the plan cannot be applied: " + "; ".join(plan.failures))
    chosen = review.choose(snapshot, plan)
    if not chosen.has_changes:
        return Applied(plan, chosen, ApplyReport(), applyable=plan.applyable)
    preflight(session, chosen)
    forced_git = run.force and bool(git_problems(session))  # lifted before the lock
    report, audit_error = _carry_out(session, chosen, stop, review.finished, run.audit_path)
    return Applied(plan, chosen, report, audit_error, plan.applyable and not forced_git)


def git_problems(session: Session) -> list[str]:
    """Why writing the sink would put secrets where git would commit them."""
    from keysync.engine.gitcheck import unignored_advice

    is_directory = session.loaded.manifest.sink.type == "directory"
    advice = (unignored_advice(path, is_directory) for path in session.sink.local_paths())
    return [text for text in advice if text]


def check_git(session: Session, force: bool) -> None:
    problems = git_problems(session)
    if problems and not force:
        raise UnsafePlanError(problems[0])


def _writes_sink(plan: Plan) -> bool:
    return bool(plan.stale_records) or any(a.creates or a.action == "delete" for a in plan.actions)


def preflight(session: Session, plan: Plan) -> None:
    """Before the first change, the sink must take a secret and give one up."""
    if _writes_sink(plan):
        session.sink.check_writable()


def readiness_problems(session: Session, plan: Plan) -> list[str]:
    """What apply's preflight would refuse, found by the sink's read-only `check_ready()`, so
    that a reviewed plan does not fail at merge. Sinks without that method are not checked."""
    from keysync.errors import SinkError

    check = getattr(session.sink, "check_ready", None)
    if check is None or not _writes_sink(plan):
        return []
    try:
        check()
    except SinkError as exc:
        return [f"apply would fail: {exc}"]
    return []


def _carry_out(
    session: Session,
    plan: Plan,
    stop: threading.Event,
    on_outcome: Callable[[Outcome], None],
    audit_path: Path | None,
) -> tuple[ApplyReport, str | None]:
    """Runs the plan's actions; a failed audit write stops new actions and is returned."""
    from keysync.engine.audit import AuditLog
    from keysync.errors import AuditError

    audit = AuditLog(audit_path) if audit_path else None
    failures: list[str] = []

    def handle(outcome: Outcome) -> None:
        on_outcome(outcome)
        if audit is None or failures:
            return
        try:
            audit.record(outcome, session.loaded.sha256)
        except AuditError as exc:
            failures.append(str(exc))
            stop.set()

    applier = Applier(
        session.client, session.sink, session.coderd_url, session.options.parallelism, stop, handle
    )
    try:
        report = applier.apply(plan)
    finally:
        if audit is not None:
            audit.close()
    if failures:
        report.interrupted = False  # stopped by the broken trail, not by a signal
    _after_apply(session, report, stop)
    return report, (failures[0] if failures else None)


def _after_apply(session: Session, report: ApplyReport, stop: threading.Event) -> None:
    """The sink's optional step once every secret is written (kubernetes: roll the workloads);
    an interrupt meanwhile ends its waiting and makes the apply an interrupted one."""
    after = getattr(session.sink, "after_apply", None)
    if after is None or report.interrupted or stop.is_set():
        return
    written = [o.action.name for o in report.outcomes if o.ok and o.action.creates]
    for line, ok in after(written):
        (report.notes if ok else report.cleanup_errors).append(line)
    report.interrupted = stop.is_set()
