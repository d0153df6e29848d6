"""In CI (`CI=true`) a `file` or `directory` sink writes the secrets to a runner's disk, which is
thrown away with the job: plan (in every format) and apply (on stderr, once) say so; sinks that
outlive the runner, and runs outside CI, are not warned about."""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from baoserver import Bao, bao_fixture  # noqa: F401  (the session's OpenBao)
from conftest import Cli

WARNING = "sink keeps the secrets on this runner's disk"
FILE_SINK = "version: 1\nkeys: [alpha]\n"  # the default sink: secrets/ai-gateway-keys.json
DIRECTORY_SINK = "version: 1\nsink:\n  type: directory\n  path: secrets\nkeys: [alpha]\n"


def _exec_sink() -> str:
    sink = {"type": "exec", "command": [sys.executable, "-c", "import sys; sys.stdin.read()"]}
    return json.dumps({"version": 1, "sink": sink, "keys": ["alpha"]})  # JSON is YAML


def test_plan_in_ci_warns_in_text_markdown_and_json_naming_the_path(cli: Cli) -> None:
    cli.write_manifest(FILE_SINK)
    cli.env["CI"] = "true"
    text = cli("plan")
    assert text.code == 0, text
    path = cli.cwd / "secrets" / "ai-gateway-keys.json"
    said = f"Warning: CI is set and the file {WARNING} ({path}): they are lost when the job ends"
    assert said in text.stdout
    assert WARNING in cli("plan", "--format", "markdown").stdout
    document = json.loads(cli("plan", "--format", "json").stdout)
    (warning,) = [w for w in document["warnings"] if WARNING in w]
    assert "unless that path is kept" in warning and "vault or kubernetes sink" in warning
    cli("plan", "--out", "plan.json")
    saved = json.loads((cli.cwd / "plan.json").read_text())
    assert warning in saved["warnings"]


@pytest.mark.parametrize("ci", [None, "false", "0", ""])
def test_outside_ci_plan_and_apply_say_nothing_of_it(cli: Cli, ci: str | None) -> None:
    cli.write_manifest(DIRECTORY_SINK)
    if ci is not None:
        cli.env["CI"] = ci
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan
    assert not [w for w in json.loads(plan.stdout)["warnings"] if WARNING in w]
    apply = cli("apply", "--auto-approve")
    assert apply.code == 0, apply
    assert WARNING not in apply.stdout + apply.stderr


def test_apply_in_ci_warns_once_on_stderr_whatever_it_does(cli: Cli) -> None:
    cli.write_manifest(DIRECTORY_SINK)
    cli.env["CI"] = "true"
    apply = cli("apply", "--auto-approve", "--format", "json")
    assert apply.code == 0, apply
    assert apply.stderr.count(WARNING) == 1
    assert f"keysync: warning: CI is set and the directory {WARNING} ({cli.cwd / 'secrets'})" in apply.stderr
    assert json.loads(apply.stdout)["result"] == "ok"  # stdout stays the report alone
    again = cli("apply", "--auto-approve")
    assert again.code == 0 and "No changes" in again.stdout
    assert again.stderr.count(WARNING) == 1
    cli("plan", "--out", "plan.json")
    saved = cli("apply", "plan.json")
    assert saved.code == 0 and saved.stderr.count(WARNING) == 1


def test_an_exec_sink_in_ci_is_not_warned_about(cli: Cli) -> None:
    cli.write_manifest(_exec_sink())
    cli.env["CI"] = "true"
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan
    assert not [w for w in json.loads(plan.stdout)["warnings"] if WARNING in w]
    apply = cli("apply", "--auto-approve")
    assert apply.code == 0 and WARNING not in apply.stdout + apply.stderr, apply


def test_a_vault_sink_in_ci_is_not_warned_about(cli: Cli, bao: Bao) -> None:
    prefix = f"ci-{uuid.uuid4().hex[:8]}"
    cli.write_manifest(f"version: 1\nsink:\n  type: vault\n  path: {prefix}/{{name}}\nkeys: [alpha]\n")
    cli.env.update(CI="true", VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token)
    plan = cli("plan", "--format", "markdown")
    assert plan.code == 0, plan
    assert WARNING not in plan.stdout + plan.stderr
    apply = cli("apply", "--auto-approve")
    assert apply.code == 0 and WARNING not in apply.stdout + apply.stderr, apply
    assert bao.root_token not in apply.stdout + apply.stderr + plan.stdout
