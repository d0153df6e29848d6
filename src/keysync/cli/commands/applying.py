"""`keysync apply`: plan (or load a saved plan), confirm, carry it out, report."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keysync.cli import console
from keysync.cli.commands import boundary
from keysync.cli.commands.planning import plan_request, target_options
from keysync.cli.group import EXIT_INTERRUPTED, make_options, shared_options

if TYPE_CHECKING:
    from keysync.engine.execution import Applied
    from keysync.engine.session import Session, Snapshot
    from keysync.outcomes import Outcome
    from keysync.plan import Plan, PlanRequest
    from keysync.plandoc import SavedPlan


@click.command()
@shared_options
@target_options
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--parallelism",
    type=click.IntRange(1, 256),
    default=10,
    show_default=True,
    help="How many actions run at once.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Allow deletes beyond max_deletes, of every key, or of keys in use; "
    "allow sink paths git does not ignore.",
)
@click.option("--bypass-rate-limit", is_flag=True, help="Send X-Coder-Bypass-Ratelimit: true (owners).")
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per action carried out to this file.",
)
@click.option("--lock-timeout", metavar="DURATION", help="Wait this long for the sink lock (e.g. 30s).")
@boundary
def apply(
    planfile: Path | None,
    auto_approve: bool,
    parallelism: int,
    force: bool,
    bypass_rate_limit: bool,
    lock_timeout: str | None,
    audit_log: Path | None,
    **kwargs: Any,
) -> int:
    """Carry out the plan: create, delete and replace keys, delivering secrets to the sink.

    \b
    Examples:
      keysync apply
      keysync apply --auto-approve --parallelism 20
      keysync plan --out plan.json && keysync apply plan.json
    """
    from keysync.engine.execution import ApplyRun, apply_sequence
    from keysync.engine.runner import runner_disk_warnings
    from keysync.engine.session import Session

    request = plan_request(kwargs, force=force)
    saved = _load_saved(planfile, request) if planfile else None
    options = make_options(kwargs, bypass_rate_limit=bypass_rate_limit, parallelism=parallelism, force=force)
    run = ApplyRun(
        request=saved.request if saved else request,
        force=force,
        saved=saved,
        lock_timeout=seconds(lock_timeout),
        audit_path=audit_log,
    )
    session = Session(options)
    stop = threading.Event()
    try:
        if saved is not None:
            _check_saved_context(saved, session)
        for warning in runner_disk_warnings(session, os.environ):
            console.err(f"keysync: warning: {warning}")
        with _ApplyReview(session, force, auto_approve or saved is not None, stop) as review:
            applied = apply_sequence(session, run, review, stop)
        return _present(applied, session.options.format)
    finally:
        session.close()


class _ApplyReview:
    """Refuses what needs --force, asks for confirmation, then shows progress; from approval on,
    SIGINT and SIGTERM stop the apply gracefully instead of cutting it short."""

    def __init__(self, session: Session, force: bool, approved: bool, stop: threading.Event) -> None:
        self._session = session
        self._force = force
        self._approved = approved
        self._stop = stop
        self._progress: console.Progress | None = None
        self._signals = ExitStack()

    def __enter__(self) -> _ApplyReview:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.close()
        self._signals.close()

    def planned(self, snapshot: Snapshot, plan: Plan) -> None:
        pass

    def choose(self, snapshot: Snapshot, plan: Plan) -> Plan:
        if not plan.has_changes:
            return plan
        plan.raise_if_unsafe(self._force)
        if not self._approved:
            self._confirm(snapshot, plan)
        self._signals.enter_context(_stop_on_signals(self._stop))
        self._progress = console.Progress(len(plan.actions))
        return plan

    def finished(self, outcome: Outcome) -> None:
        from keysync.report import outcome_line

        if self._progress is not None:
            self._progress.finished(outcome_line(outcome), outcome.ok)

    def _confirm(self, snapshot: Snapshot, plan: Plan) -> None:
        from keysync.render import render_text, target_line

        _require_terminal()
        color = console.color_enabled_err(self._session.options.no_color)
        target = target_line(self._session.coderd_url, self._session.url_source)
        console.err(render_text(plan, snapshot.now, color, target))
        _confirm()


def _present(applied: Applied, fmt: str) -> int:
    from keysync.report import render_report, report_document

    if not applied.changed_anything:
        for warning in applied.plan.warnings:
            console.err(f"keysync: warning: {warning}")
    report = applied.report
    document = report_document(report, applied.applyable)
    if fmt == "json":
        text = json.dumps(document, indent=2)
    else:
        text = render_report(report) if applied.changed_anything else "No changes. Nothing to apply."
    if not console.out(text) and applied.changed_anything:
        console.err(render_report(report))  # stdout went away: the report goes where it still can
    if applied.audit_error:
        console.err(f"keysync: error: {applied.audit_error}; the actions above were done and are kept")
        return 1
    if report.interrupted:
        return EXIT_INTERRUPTED
    if not report.succeeded:
        first = report.failed[0] if report.failed else None
        reason = f"{first.action.action} {first.action.name}: {first.error}" if first else "see above"
        console.err(f"keysync: error: apply failed ({len(report.failed)} action(s)); first: {reason}")
        return 1
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """The first SIGINT or SIGTERM lets in-flight actions finish and starts no new ones."""

    def handler(signum: int, frame: Any) -> None:
        from keysync.transport.deadline import interrupt_requests

        if not stop.is_set():
            console.err("keysync: interrupted: finishing the actions in flight, starting no new ones")
        stop.set()
        interrupt_requests()  # a request stuck on a slow server ends after a short grace

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _require_terminal() -> None:
    from keysync.errors import UsageError

    if not console.stdin_is_terminal():
        raise UsageError(
            "apply needs confirmation but there is no terminal: pass --auto-approve, or apply a saved plan"
        )


def _confirm() -> None:
    from keysync.errors import UsageError

    answer = console.ask("Do you want to apply these actions? Only 'yes' will be accepted: ")
    if answer != "yes":
        raise UsageError("apply cancelled: nothing was changed")


def _load_saved(planfile: Path, request: PlanRequest) -> SavedPlan:
    from keysync.errors import UsageError

    if request.targets or request.replace:
        raise UsageError("apply PLANFILE takes no --target or --replace: the saved plan has its own")
    from keysync.plandoc import MAX_PLAN_BYTES, parse_saved_plan

    try:
        with planfile.open("rb") as file:
            raw = file.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{planfile}: not a readable keysync plan ({exc.strerror or exc})") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise UsageError(f"{planfile}: not a keysync plan: larger than {MAX_PLAN_BYTES >> 20} MiB")
    try:
        return parse_saved_plan(raw)
    except ValueError as exc:
        raise UsageError(f"{planfile}: {exc}") from None


def _check_saved_context(saved: SavedPlan, session: Session) -> None:
    """Refuses a plan made for another deployment or API before talking to either."""
    from keysync.errors import StalePlanError

    if saved.coderd_url != session.coderd_url:
        raise StalePlanError(
            f"the saved plan was made for {saved.coderd_url!r}, not {session.coderd_url!r}; "
            "nothing was changed"
        )
    wanted = session.options.api or session.loaded.manifest.coderd.api
    if wanted != "auto" and saved.api != wanted:
        raise StalePlanError(
            f"the saved plan was made for API {saved.api!r}, not {wanted!r}; nothing was changed"
        )


def seconds(text: str | None, option: str = "--lock-timeout") -> float | None:
    if text is None:
        return None
    from keysync.duration import parse_duration
    from keysync.errors import UsageError

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


COMMANDS = [apply]
