"""Carrying out a plan for a session: the git rail, the sink preflight, the audit trail and the
applier. Shared by `apply` and `watch`; no terminal, no click."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from keysync.engine.applier import Applier
from keysync.engine.session import Session
from keysync.errors import UnsafePlanError
from keysync.outcomes import ApplyReport, Outcome
from keysync.plan import Plan


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


def execute_plan(
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
