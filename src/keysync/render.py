"""Plans for people: Terraform-like text and Markdown for a pull-request comment."""

from __future__ import annotations

from datetime import datetime

from keysync.plan import Action, Plan, Waiting
from keysync.timefmt import age, ahead, relative

SYMBOL = {"create": "+", "delete": "-", "replace": "-/+", "rotate": "+~", "retire": "~-"}
_COLOR = {"create": "32", "delete": "31", "replace": "33", "rotate": "36", "retire": "35"}
NO_CHANGES = "No changes. Coder's keys match the manifest and the sink holds every secret."


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def _no_changes(plan: Plan) -> str:
    """The all-clear only when there is nothing to warn about either."""
    return "No changes." if plan.warnings or plan.waiting else NO_CHANGES


def summary_line(plan: Plan) -> str:
    counts = plan.summary()
    line = f"Plan: {counts['create']} to create, {counts['delete']} to delete, {counts['replace']} to replace"
    for kind in ("rotate", "retire"):
        if counts.get(kind):
            line += f", {counts[kind]} to {kind}"
    line += "."
    if plan.stale_records:
        line += f" {len(plan.stale_records)} stale sink record(s) to remove."
    return line


def _live_details(action: Action, now: datetime) -> str:
    live = action.live
    if action.generation is not None and live is None:
        return f"  new generation {action.generation}"
    if live is None:
        return ""
    if action.action == "retire":
        seen = relative(live.last_seen, now)
        return f"  generation {live.name}, key_prefix {live.key_prefix}, last heartbeat {seen}"
    return (
        f"  destroys live key {live.name}, key_prefix {live.key_prefix}, age {age(live.created_at, now)}, "
        f"last heartbeat {relative(live.last_seen, now)}"
    )


def _waiting_text(waiting: Waiting, now: datetime) -> str:
    key = waiting.key
    return (
        f"{waiting.name}: previous generation {key.name} (key_prefix {key.key_prefix}) last heartbeat "
        f"{relative(key.last_seen, now)}, retired {ahead(waiting.retire_after, now)}"
    )


def target_line(coderd_url: str, source: str) -> str:
    """Which deployment the plan is for, and which setting chose it (--url, CODER_URL, manifest)."""
    return f"Target: {coderd_url} (from {source})"


def render_text(plan: Plan, now: datetime, color: bool = False, target: str | None = None) -> str:
    lines: list[str] = [target, ""] if target else []
    if plan.actions:
        lines += ["keysync will perform these actions:", ""]
        for action in plan.actions:
            head = _paint(f"{SYMBOL[action.action]:>3} {action.action}", _COLOR[action.action], color)
            lines.append(f"{head} {action.name}  ({action.reason}){_live_details(action, now)}")
        lines.append("")
    for waiting in plan.waiting:
        lines.append(f"  ~ waiting {_waiting_text(waiting, now)}")
    if plan.waiting:
        lines.append("")
    for warning in plan.warnings:
        lines.append(_paint("Warning: ", "33", color) + warning)
    for failure in plan.failures:
        lines.append(_paint("Error: ", "31", color) + failure)
    if plan.warnings or plan.failures:
        lines.append("")
    if plan.has_changes or not plan.failures:
        lines.append(summary_line(plan) if plan.has_changes else _no_changes(plan))
    return "\n".join(lines) + "\n"


def render_markdown(plan: Plan, now: datetime, coderd_url: str, source: str | None = None) -> str:
    origin = f" (from {source})" if source else ""
    lines = [f"### keysync plan for {coderd_url}{origin}", ""]
    if plan.has_changes or not plan.failures:
        lines.append(f"**{summary_line(plan)}**" if plan.has_changes else _no_changes(plan))
    if plan.actions:
        lines += [
            "",
            "| | action | key | reason | live key destroyed | key prefix | age | last heartbeat |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for action in plan.actions:
            live = action.live
            cells = [
                f"`{SYMBOL[action.action]}`",
                action.action,
                f"`{action.name}`",
                action.reason,
                f"`{live.name}`" if live else "",
                f"`{live.key_prefix}`" if live else "",
                age(live.created_at, now) if live else "",
                relative(live.last_seen, now) if live else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- :hourglass: waiting: {_waiting_text(w, now)}" for w in plan.waiting]
    notes += [f"- :warning: {w}" for w in plan.warnings] + [f"- :x: {f}" for f in plan.failures]
    if notes:
        lines += ["", "**Warnings**", "", *notes]
    return "\n".join(lines) + "\n"
