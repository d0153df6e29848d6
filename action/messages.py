"""What the job summary and the pull-request comments say, in GitHub's Markdown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

MAX_COMMENT = 60_000  # GitHub refuses bodies over 65,536 characters


class Outcome(Protocol):
    @property
    def manifest(self) -> str: ...
    @property
    def exitcode(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


def fenced(text: str) -> str:
    """A code block no backticks in the text can close early."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", text))])
    return f"{fence}\n{text.rstrip()}\n{fence}"


def section(command: str, result: Outcome) -> str:
    """What the job summary, and a comment, show for one manifest."""
    title = f"**keysync {command}** · manifest `{result.manifest}`"
    if result.exitcode not in (0, 2):
        return (
            f"{title}\n\n**Failed** (exit {result.exitcode}):\n\n{fenced(result.stderr)}\n\n{result.stdout}"
        )
    body = result.stdout if command == "plan" else fenced(result.stdout)
    return f"{title}\n\n{body}"


def comment_body(result: Outcome, footer: str) -> str | None:
    if result.exitcode == 0:
        return None
    text = section("plan", result)
    if len(text) > MAX_COMMENT:
        text = text[:MAX_COMMENT] + "\n\n…cut short here: the whole plan is in the job summary."
    return f"{text}\n\n{footer}"


def nothing_pending(manifest: str, footer: str) -> str:
    return (
        f"**keysync plan** · manifest `{manifest}`\n\n**Nothing pending.** Coder's keys match the "
        f"manifest and the sink holds every secret.\n\n{footer}"
    )


def footer(env: Mapping[str, str], event: Mapping[str, object]) -> str:
    head = event.get("pull_request")
    sha = str(head.get("head", {}).get("sha", "")) if isinstance(head, dict) else ""
    sha = sha or env.get("GITHUB_SHA", "")
    server, repo, run = (
        env.get("GITHUB_SERVER_URL", ""),
        env.get("GITHUB_REPOSITORY", ""),
        env.get("GITHUB_RUN_ID"),
    )
    run_link = f" · [workflow run]({server}/{repo}/actions/runs/{run})" if server and repo and run else ""
    return f"<sub>planned at commit `{sha[:12]}`{run_link}</sub>"
