"""What apply did, for people and for scripts."""

from __future__ import annotations

from typing import Any

from keysync import __version__
from keysync.outcomes import ApplyReport, Outcome
from keysync.plandoc import FORMAT_VERSION
from keysync.render import SYMBOL

_PAST = {
    "create": "created",
    "delete": "deleted",
    "replace": "replaced",
    "rotate": "rotated",
    "retire": "retired",
}


def outcome_line(outcome: Outcome) -> str:
    action = outcome.action
    if not outcome.ok:
        return f"  ! failed to {action.action} {action.name}: {outcome.error}"
    detail = ""
    if action.action == "retire" and action.live is not None:
        detail = f"  generation {action.live.name}"
    if outcome.created is not None:
        if outcome.created.name != action.name:
            detail += f"  generation {outcome.created.name}"
        detail += f"  key_prefix {outcome.created.key_prefix}"
    return f"{SYMBOL[action.action]:>3} {_PAST[action.action]} {action.name} ({action.reason}){detail}"


def summary_line(report: ApplyReport) -> str:
    counts = report.counts()
    shown = [kind for kind in _PAST if kind in ("create", "delete", "replace") or counts.get(kind)]
    done = ", ".join(f"{counts[kind]} {_PAST[kind]}" for kind in shown)
    done += f", {counts['failed']} failed"
    if report.interrupted:
        return f"Apply interrupted: {done}, {len(report.not_started)} not started."
    if report.succeeded:
        return f"Apply complete: {done}."
    if report.sink_failure is not None:
        return (
            f"Apply failed: the sink failed, so nothing more was started: {done}, "
            f"{len(report.not_started)} not started. Fix the sink, then `keysync apply` again."
        )
    return f"Apply failed: {done}. Run `keysync plan` to see what is left; `keysync apply` again to finish."


def render_report(report: ApplyReport) -> str:
    lines = [outcome_line(outcome) for outcome in sorted(report.outcomes, key=lambda o: o.action.sort_key())]
    lines += [f"  . not started: {action.action} {action.name}" for action in report.not_started]
    lines += [f"  ~ {note}" for note in report.notes]
    lines += [f"  ! {error}" for error in report.cleanup_errors]
    if report.sink_failure is not None:
        lines.append(f"  ! the sink failed: {report.sink_failure}")
    lines.append(summary_line(report))
    return "\n".join(lines)


def report_document(report: ApplyReport, applyable: bool = True) -> dict[str, Any]:
    """`applyable`: the plan carried out was applyable as planned, false when --force lifted a
    guard (a plan with failures is never carried out)."""
    return {
        "format_version": FORMAT_VERSION,
        "keysync_version": __version__,
        "applyable": applyable,
        "result": "interrupted" if report.interrupted else ("ok" if report.succeeded else "failed"),
        "actions": [o.data() for o in sorted(report.outcomes, key=lambda o: o.action.sort_key())],
        "not_started": [a.data() for a in report.not_started],
        "errors": report.cleanup_errors,
        "notes": report.notes,
        "sink_failure": report.sink_failure,
        "summary": report.counts(),
    }
