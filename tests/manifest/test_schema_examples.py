"""The checked-in schema matches the models; every example is valid and calls real flags."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from keysync.manifest.schema import manifest_schema, schema_text

from conftest import KEYSYNC

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MANIFESTS = sorted(
    p for p in EXAMPLES.rglob("*.yaml") if "version: 1" in p.read_text() and "kind:" not in p.read_text()
)
WORKFLOWS = sorted((EXAMPLES / "ci").glob("*.yaml"))
WATCH = sorted((EXAMPLES / "watch").iterdir())


def test_checked_in_schema_is_the_generated_one() -> None:
    assert (ROOT / "schemas" / "keysync.schema.json").read_text() == schema_text()


def test_schema_command_prints_the_schema() -> None:
    done = subprocess.run([KEYSYNC, "schema"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == manifest_schema()


def test_there_are_examples_of_every_sink() -> None:
    sink_types = {(yaml.safe_load(p.read_text()).get("sink") or {}).get("type", "file") for p in MANIFESTS}
    assert {"file", "directory", "vault", "exec"} <= sink_types


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_manifest_is_valid(path: Path) -> None:
    done = subprocess.run([KEYSYNC, "validate", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    jsonschema.validate(yaml.safe_load(path.read_text()), manifest_schema())


def test_schema_rejects_what_validate_rejects() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "keys": ["Bad_Name"]}, manifest_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "keys": [], "surprise": 1}, manifest_schema())


def _keysync_invocations(text: str) -> list[list[str]]:
    commands = []
    for line in text.splitlines():
        for match in re.finditer(
            r"(?:^|run:|entry:|- |&&|\||exec|/)\s*keysync ([a-z-]+)((?: +-{1,2}[a-z-]+)*)", line
        ):
            flags = re.findall(r"(-{1,2}[a-z-]+)", match.group(2))
            commands.append([match.group(1), *flags])
    return commands


@pytest.mark.parametrize("path", WATCH, ids=lambda p: p.name)
def test_watch_examples_parse(path: Path) -> None:
    if path.suffix == ".service":
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(path.read_text())
        assert "keysync watch" in parser["Service"]["ExecStart"]
    else:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert documents and all("kind" in d for d in documents)


@pytest.mark.parametrize(
    "path",
    [*WORKFLOWS, *(p for p in WATCH if "--interval" in p.read_text()), ROOT / ".pre-commit-hooks.yaml"],
    ids=lambda p: p.name,
)
def test_workflow_calls_commands_and_flags_that_exist(path: Path) -> None:
    if path.suffix != ".service":
        list(yaml.safe_load_all(path.read_text()))
    invocations = _keysync_invocations(path.read_text())
    uses_the_action = "uses: keysync/keysync@" in path.read_text()  # its inputs: tests/action/test_action.py
    assert invocations or uses_the_action, f"{path} runs no keysync command"
    for command, *flags in invocations:
        done = subprocess.run([KEYSYNC, command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, f"{path}: keysync {command} does not exist"
        for flag in flags:
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", done.stdout), f"{path}: {command} {flag}"
