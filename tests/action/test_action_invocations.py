"""Every keysync command line of the CI examples and of the action is one the real CLI accepts:
the workflows are parsed as YAML, each shell command that runs keysync is split as a shell would
split it, and its arguments go through keysync's own click parser (no such option, a missing or
wrong value, a stray argument: each fails). The action's script builds its command lines in
Python, so it is run with a keysync that records them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from keysync.cli.commands import register
from keysync.cli.group import cli

from conftest import base_env

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = [*sorted((ROOT / "examples" / "ci").glob("*.yaml")), ROOT / "action.yml"]
SHELL_KEYS = ("run", "script", "before_script", "after_script")  # GitHub steps, GitLab jobs
OPERATORS = set("();<>|&")
KEYSYNC_PROGRAMS = ("keysync", "$KEYSYNC")

register(cli)


def _scripts(node: Any) -> Iterator[str]:
    """Every shell script in a workflow, wherever it sits."""
    if isinstance(node, list):
        for item in node:
            yield from _scripts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in SHELL_KEYS and isinstance(value, str):
                yield value
            elif key in SHELL_KEYS and isinstance(value, list):
                yield from (item for item in value if isinstance(item, str))
            else:
                yield from _scripts(value)


def _simple_commands(script: str) -> Iterator[list[str]]:
    """The words of each simple command, split at newlines and at shell operators."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if set(token) <= OPERATORS:
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def keysync_invocations(text: str) -> list[list[str]]:
    """keysync's arguments for each command that runs it, after any VAR=value assignments."""
    found = []
    for script in _scripts(yaml.safe_load(text)):
        for words in _simple_commands(script):
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]
            program = words[0] if words else ""
            if program in KEYSYNC_PROGRAMS or program.endswith("/keysync"):
                found.append(words[1:])
    return found


def parse_error(args: list[str]) -> str | None:
    """What keysync's parser says of these arguments, or None when it takes them."""
    if not args or args[0] not in cli.commands:
        return f"no such command {args[:1]}"
    command = cli.commands[args[0]]
    try:
        command.make_context(f"keysync {args[0]}", list(args[1:]))
    except click.UsageError as exc:
        return exc.format_message()
    return None


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_keysync_command_line_of_the_workflow_parses(path: Path) -> None:
    text = path.read_text()
    invocations = keysync_invocations(text)
    uses_the_action = "uses: keysync/keysync@" in text or path.name == "action.yml"  # the script, below
    assert invocations or uses_the_action, f"{path.name} runs no keysync"
    for args in invocations:
        error = parse_error(args)
        assert error is None, f"{path.name}: `keysync {shlex.join(args)}`: {error}"


def test_the_gitlab_example_validates_plans_and_applies_the_saved_plan() -> None:
    commands = keysync_invocations((ROOT / "examples" / "ci" / "gitlab-ci.yaml").read_text())
    assert commands == [
        ["validate"],
        ["plan", "--format", "markdown", "--detailed-exitcode", "--out", "keysync-plan.json"],
        ["apply", "keysync-plan.json"],
        ["plan", "--detailed-exitcode"],
    ]


def test_the_parser_refuses_what_keysync_refuses() -> None:
    """The check above would catch a wrong option, a bad value and a missing value."""
    assert parse_error(["plan", "--format", "markdown"]) is None
    assert "No such option" in str(parse_error(["plan", "--auto-approve"]))
    assert "--format" in str(parse_error(["plan", "--format", "yaml"]))
    assert "requires an argument" in str(parse_error(["plan", "--out"]))
    assert "unexpected extra argument" in str(parse_error(["apply", "a.json", "b.json"]))
    assert "no such command" in str(parse_error(["deploy"]))
    script = 'x=$(date) && CI=true keysync plan -f a.yaml --target gw > p.md; echo "keysync apply"'
    expected = [["plan", "-f", "a.yaml", "--target", "gw"]]
    assert keysync_invocations(yaml.safe_dump({"run": script})) == expected


RECORDER = """\
import json, os, sys
with open(os.environ["KEYSYNC_RECORD"], "a", encoding="utf-8") as record:
    record.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.mark.parametrize("manifests", [["keysync.yaml"], ["deploy/prod/keysync.yaml", "staging.yaml"]])
def test_the_actions_command_lines_parse(tmp_path: Path, manifests: list[str]) -> None:
    recorder = tmp_path / "keysync"
    recorder.write_text(f"#!{sys.executable}\n{RECORDER}")
    recorder.chmod(0o755)
    record = tmp_path / "record.jsonl"
    env = {**base_env(), "KEYSYNC": str(recorder), "KEYSYNC_RECORD": str(record), "INPUT_COMMENT": "false"}
    env["INPUT_MANIFEST"] = "\n".join(manifests)
    for command in ("plan", "apply"):
        run = subprocess.run(
            [sys.executable, str(ROOT / "action" / "run.py")],
            cwd=tmp_path,
            env={**env, "INPUT_COMMAND": command},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        if command == "plan":  # the recorder wrote no plan: put one where apply looks for it
            for args in map(json.loads, record.read_text().splitlines()):
                Path(tmp_path, args[args.index("--out") + 1]).write_text('{"actions": []}')
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    assert [args[0] for args in recorded] == ["plan"] * len(manifests) + ["apply"] * len(manifests)
    for args in recorded:
        error = parse_error(args)
        assert error is None, f"action/run.py: `keysync {shlex.join(args)}`: {error}"
    saved = {args[args.index("-f") + 1]: args[args.index("--out") + 1] for args in recorded[: len(manifests)]}
    applied = {args[args.index("-f") + 1]: args[-1] for args in recorded[len(manifests) :]}
    assert applied == saved and sorted(saved) == sorted(manifests)  # each manifest's reviewed plan
