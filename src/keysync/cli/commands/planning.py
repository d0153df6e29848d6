"""`keysync plan`: read the world, print what apply would change, change nothing."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from keysync.cli import console
from keysync.cli.commands import boundary
from keysync.cli.group import make_options, only_manifest, shared_options

if TYPE_CHECKING:
    from keysync.cli.commands.several import Section
    from keysync.engine.session import Session, Snapshot
    from keysync.plan import PlanRequest

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CHANGES = 2


def target_options(func: F) -> F:
    func = click.option(
        "--replace",
        "replace",
        multiple=True,
        metavar="NAME",
        help="Replace this key even if nothing is wrong with it (repeatable).",
    )(func)
    return click.option(
        "--target", "target", multiple=True, metavar="NAME", help="Limit the plan to this key (repeatable)."
    )(func)


def plan_request(kwargs: dict[str, Any], force: bool = False) -> PlanRequest:
    from keysync.plan import PlanRequest

    targets, replace = kwargs.pop("target"), kwargs.pop("replace")
    _check_names("--target", targets)
    _check_names("--replace", replace)
    return PlanRequest(frozenset(targets), frozenset(replace), force)


def _check_names(option: str, names: tuple[str, ...]) -> None:
    """A name that no key can have is a typo, or text not to be echoed to a terminal."""
    from keysync.errors import UsageError
    from keysync.names import name_problem

    for name in names:
        problem = name_problem(name)
        if problem:
            raise UsageError(f"{option} {problem}")


def render_plan(snapshot: Snapshot, session: Session, request: PlanRequest) -> str:
    from keysync.plandoc import plan_document
    from keysync.render import render_markdown, render_text, target_line

    fmt = session.options.format
    if fmt == "json":
        return json.dumps(plan_document(snapshot.plan, snapshot.world, request), indent=2)
    if fmt == "markdown":
        return render_markdown(snapshot.plan, snapshot.now, session.coderd_url, session.url_source)
    color = console.color_enabled(sys.stdout, session.options.no_color)
    target = target_line(session.coderd_url, session.url_source)
    return render_text(snapshot.plan, snapshot.now, color, target)


@click.command()
@shared_options
@target_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    metavar="PLANFILE",
    help="Save the plan as JSON for `keysync apply PLANFILE`.",
)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when there are none."
)
@boundary
def plan(out: str | None, detailed_exitcode: bool, **kwargs: Any) -> int:
    """Show what apply would change. Changes nothing anywhere.

    \b
    Examples:
      keysync plan
      keysync plan --format markdown > plan.md
      keysync plan --out plan.json --detailed-exitcode
    """
    request = plan_request(kwargs)
    if len(kwargs["manifest"]) > 1:
        if out:
            only_manifest(kwargs["manifest"], "--out")
        return plan_several(kwargs, request, detailed_exitcode)
    session, snapshot = planned(kwargs, request)
    console.out(render_plan(snapshot, session, request))
    if out:
        save_plan(out, snapshot, request)
        console.err(f"Saved the plan to {out}; apply it with `keysync apply {out}`.")
    if snapshot.plan.failures:
        for failure in snapshot.plan.failures:
            console.err(f"keysync: error: {failure}")
        return 1
    return EXIT_CHANGES if detailed_exitcode and snapshot.plan.has_changes else 0


def planned(
    kwargs: dict[str, Any], request: PlanRequest, manifest: Path | None = None
) -> tuple[Session, Snapshot]:
    from keysync.engine.session import Session

    session = Session(make_options(kwargs, manifest=manifest))
    try:
        return session, preflighted(session, session.snapshot(request))
    finally:
        session.close()


def plan_several(kwargs: dict[str, Any], request: PlanRequest, detailed_exitcode: bool) -> int:
    from keysync.cli.commands.several import EXIT_FAILED, Section, each, exit_code, write
    from keysync.errors import UsageError
    from keysync.plandoc import plan_document

    if request.targets or request.replace:
        raise UsageError("--target and --replace take exactly one manifest")

    def one(path: Path) -> Section:
        session, snapshot = planned(dict(kwargs), request, manifest=path)
        for failure in snapshot.plan.failures:
            console.err(f"keysync: error: {path}: {failure}")
        changes = EXIT_CHANGES if snapshot.plan.has_changes else 0
        code = EXIT_FAILED if snapshot.plan.failures else changes
        if session.options.format == "json":
            return Section(path, code, document=plan_document(snapshot.plan, snapshot.world, request))
        return Section(path, code, render_plan(snapshot, session, request))

    sections = each(kwargs["manifest"], one)
    write(sections, kwargs["output_format"])
    code = exit_code(sections)
    return code if detailed_exitcode or code == EXIT_FAILED else 0


def preflighted(session: Session, snapshot: Snapshot) -> Snapshot:
    """The plan with what apply would check first: the URL it targets, the git rail (a problem
    that needs --force), and the sink's read-only checks (a failure: plan exits 1)."""
    from keysync.engine.execution import git_problems, readiness_problems
    from keysync.engine.runner import runner_disk_warnings
    from keysync.guards import git_rail

    plan = snapshot.plan
    endpoints = [*session.endpoint_warnings(), *runner_disk_warnings(session, os.environ)]
    preflighted = replace(
        plan,
        warnings=[*endpoints, *plan.warnings],
        failures=plan.failures + readiness_problems(session, plan),
    ).holding_back(git_rail(git_problems(session)))
    return replace(snapshot, plan=preflighted)


def save_plan(path: str, snapshot: Snapshot, request: PlanRequest) -> None:
    from keysync.plandoc import plan_document
    from keysync.sinks.durable import atomic_write

    document = plan_document(snapshot.plan, snapshot.world, request, snapshot=True)
    atomic_write(Path(path).absolute(), (json.dumps(document, indent=2) + "\n").encode())


COMMANDS = [plan]
