"""`keysync apply`: plan (or load a saved plan), confirm, carry it out, report."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from keysync.cli import console
from keysync.cli.commands import boundary
from keysync.cli.commands.planning import plan_request, target_options
from keysync.cli.group import EXIT_INTERRUPTED, make_options, shared_options


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
    from keysync.engine.execution import check_git
    from keysync.engine.runner import runner_disk_warnings
    from keysync.engine.session import Session

    request = plan_request(kwargs, force=force)
    saved = _load_saved(planfile, request) if planfile else None
    if saved is not None:
        request = _saved_request(saved)
    options = make_options(kwargs, bypass_rate_limit=bypass_rate_limit, parallelism=parallelism, force=force)
    session = Session(options)
    try:
        if saved is not None:
            _check_saved_context(saved, session)
        for warning in runner_disk_warnings(session, os.environ):
            console.err(f"keysync: warning: {warning}")
        check_git(session, force)  # before the lock, which would sit in the work tree too
        with session.sink.lock(seconds(lock_timeout)):
            approved = auto_approve or saved is not None
            return _apply_locked(session, request, saved, approved, force, audit_log)
    finally:
        session.close()


def _apply_locked(
    session: Any,
    request: Any,
    saved: dict[str, Any] | None,
    approved: bool,
    force: bool,
    audit_path: Path | None,
) -> int:
    from keysync.engine.execution import git_problems, preflight
    from keysync.errors import KeysyncError
    from keysync.plandoc import check_saved_actions, check_saved_plan
    from keysync.render import render_text, target_line

    snapshot = session.snapshot(request)
    plan = replace(snapshot.plan, warnings=[*session.url_warnings(), *snapshot.plan.warnings])
    if saved is not None:
        check_saved_plan(saved, snapshot.world)
        check_saved_actions(saved, plan)
    if plan.failures:
        raise KeysyncError("the plan cannot be applied: " + "; ".join(plan.failures))
    if not plan.has_changes:
        for warning in plan.warnings:
            console.err(f"keysync: warning: {warning}")
        if session.options.format == "json":
            from keysync.outcomes import ApplyReport
            from keysync.report import report_document

            console.out(json.dumps(report_document(ApplyReport(), plan.applyable), indent=2))
        else:
            console.out("No changes. Nothing to apply.")
        return 0
    plan.raise_if_unsafe(force)
    if not approved:
        _require_terminal()
        color = console.color_enabled_err(session.options.no_color)
        target = target_line(session.coderd_url, session.url_source)
        console.err(render_text(plan, snapshot.now, color, target))
        _confirm()
    preflight(session, plan)
    forced_git = force and bool(git_problems(session))  # lifted before the lock
    return _execute(session, plan, audit_path, plan.applyable and not forced_git)


def _execute(session: Any, plan: Any, audit_path: Path | None, applyable: bool) -> int:
    from keysync.engine.execution import execute_plan
    from keysync.report import outcome_line, render_report, report_document

    progress = console.Progress(len(plan.actions))
    stop = threading.Event()
    with _stop_on_signals(stop):
        report, audit_error = execute_plan(
            session, plan, stop, lambda o: progress.finished(outcome_line(o), o.ok), audit_path
        )
    progress.close()
    document = report_document(report, applyable)
    text = json.dumps(document, indent=2) if session.options.format == "json" else None
    if not console.out(text or render_report(report)):
        console.err(render_report(report))  # stdout went away: the report goes where it still can
    if audit_error:
        console.err(f"keysync: error: {audit_error}; the actions above were done and are kept")
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


def _load_saved(planfile: Path, request: Any) -> dict[str, Any]:
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


def _check_saved_context(saved: dict[str, Any], session: Any) -> None:
    """Refuses a plan made for another deployment or API before talking to either."""
    from keysync.errors import StalePlanError

    if saved.get("coderd_url") != session.coderd_url:
        raise StalePlanError(
            f"the saved plan was made for {saved.get('coderd_url')!r}, not {session.coderd_url!r}; "
            "nothing was changed"
        )
    wanted = session.options.api or session.loaded.manifest.coderd.api
    if wanted != "auto" and saved.get("api") != wanted:
        raise StalePlanError(
            f"the saved plan was made for API {saved.get('api')!r}, not {wanted!r}; nothing was changed"
        )


def _saved_request(saved: dict[str, Any]) -> Any:
    from keysync.plan import PlanRequest

    return PlanRequest(frozenset(saved.get("targets", [])), frozenset(saved.get("replace", [])))


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
