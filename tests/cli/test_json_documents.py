"""What pipelines read: every JSON document carries its format_version, and the plan says whether
it is `applyable` (no failure, nothing that needs --force), the saved plan and apply's report too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Cli

THREE = "version: 1\nkeys: [alpha, beta, gamma]\n"
ONE_LEFT = "version: 1\npolicy:\n  max_deletes: 1\nkeys: [alpha]\n"  # deletes 2: needs --force


def _json(run: Any) -> Any:
    assert run.code == 0, run
    return json.loads(run.stdout)


def test_a_plain_plan_is_applyable_in_json_the_plan_file_and_the_report(cli: Cli) -> None:
    cli.write_manifest(THREE)
    assert _json(cli("plan", "--format", "json"))["applyable"] is True
    assert cli("plan", "--out", "plan.json").code == 0
    assert json.loads((cli.cwd / "plan.json").read_text())["applyable"] is True
    report = _json(cli("apply", "plan.json", "--format", "json"))
    assert report["applyable"] is True and report["result"] == "ok" and report["format_version"] == 1
    nothing = _json(cli("apply", "--auto-approve", "--format", "json"))
    assert nothing["applyable"] is True and nothing["actions"] == []


def test_a_plan_that_needs_force_is_not_applyable_and_a_forced_apply_says_so(cli: Cli) -> None:
    cli.write_manifest(THREE)
    assert cli("apply", "--auto-approve").code == 0
    cli.write_manifest(ONE_LEFT)
    plan = _json(cli("plan", "--format", "json"))
    assert plan["applyable"] is False
    assert any(w.startswith("needs --force: ") for w in plan["warnings"])
    refused = cli("apply", "--auto-approve", "--format", "json")
    assert refused.code == 1 and refused.stdout == "" and "--force" in refused.stderr
    report = _json(cli("apply", "--auto-approve", "--force", "--format", "json"))
    assert report["applyable"] is False and report["result"] == "ok"
    assert report["summary"]["delete"] == 2


def test_a_plan_with_a_failure_is_not_applyable(cli: Cli) -> None:
    strict = "version: 1\npolicy:\n  on_missing_secret: fail\nkeys: [alpha]\n"
    cli.write_manifest(strict)
    assert cli("apply", "--auto-approve").code == 0
    (cli.cwd / "secrets" / "ai-gateway-keys.json").unlink()
    run = cli("plan", "--format", "json", "--out", "plan.json")
    assert run.code == 1
    assert json.loads(run.stdout)["applyable"] is False
    assert json.loads((cli.cwd / "plan.json").read_text())["applyable"] is False


def _saved_without_applyable(cli: Cli) -> Path:
    assert cli("plan", "--out", "plan.json").code == 0
    path = cli.cwd / "plan.json"
    document = json.loads(path.read_text())
    del document["applyable"]  # as keysync wrote plans before the field
    path.write_text(json.dumps(document))
    return path


def test_a_saved_plan_from_before_applyable_loads_and_what_needs_force_still_needs_it(cli: Cli) -> None:
    cli.write_manifest(THREE)
    assert cli("apply", "--auto-approve").code == 0
    cli.write_manifest(ONE_LEFT)
    _saved_without_applyable(cli)
    refused = cli("apply", "plan.json")
    assert refused.code == 1 and "refusing to apply without --force" in refused.stderr
    report = _json(cli("apply", "plan.json", "--force", "--format", "json"))
    assert report["applyable"] is False and report["summary"]["delete"] == 2


def test_a_saved_plan_whose_applyable_is_not_a_boolean_is_refused(cli: Cli) -> None:
    cli.write_manifest(THREE)
    path = _saved_without_applyable(cli)
    path.write_text(json.dumps({**json.loads(path.read_text()), "applyable": "yes"}))
    run = cli("apply", "plan.json")
    assert run.code == 1
    assert run.stderr == "keysync: error: plan.json: not a keysync plan: applyable: not true or false\n"


def test_every_json_document_carries_its_format_version(cli: Cli) -> None:
    cli.write_manifest(THREE)
    (cli.cwd / "other.yaml").write_text(THREE)
    assert _json(cli("status", "--format", "json"))["format_version"] == 1
    assert _json(cli("validate", "--format", "json"))["format_version"] == 1
    for command in ("plan", "status", "validate"):
        listed = _json(cli(command, "-f", "keysync.yaml", "-f", "other.yaml", "--format", "json"))
        assert [d["format_version"] for d in listed] == [1, 1], command
    assert _json(cli("apply", "--auto-approve", "--format", "json"))["format_version"] == 1
    sink = cli.cwd / "secrets" / "ai-gateway-keys.json"
    secret = json.loads(sink.read_text())["keys"]["alpha"]["key"]
    sink.unlink()
    imported = _json(cli("import", "alpha", "--format", "json", input=secret))
    assert imported["format_version"] == 1 and imported["imported"] == "alpha"


def test_a_saved_plan_without_applyable_gets_it_from_its_warnings_on_load() -> None:
    from keysync.plandoc import parse_saved_plan

    fields = ("coderd_url", "api", "manifest_sha256", "live_fingerprint", "sink_fingerprint")
    old = {"format_version": 1, **dict.fromkeys(fields, "x"), "targets": [], "replace": [], "actions": []}
    assert parse_saved_plan(json.dumps({**old, "warnings": ["a sink note"]}).encode()).applyable is True
    forced = {**old, "warnings": ["needs --force: deleting every managed key"]}
    assert parse_saved_plan(json.dumps(forced).encode()).applyable is False
    assert parse_saved_plan(json.dumps({**forced, "applyable": True}).encode()).applyable is True
