"""End to end, the everyday loop: plan, apply, sinks, status, export, formats and exit codes.

Every test runs the installed `keysync` as a subprocess against the dev server over HTTP, and
judges the result by what a user sees: exit codes, stdout and stderr, the keys Coder lists, the
sink's files, and whether the gateway endpoint accepts the delivered secrets.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from terminal import run_on_a_terminal

from keysync.devserver import DevServer, DevServerConfig

from coderlive import IN, TLS, create_out_of_band, delete_out_of_band, gateway_status, live_keys
from conftest import OWNER_TOKEN, Cli

COLLECTIONS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}
SINK = Path("secrets/ai-gateway-keys.json")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SECRET_SHAPE = re.compile(r"^[0-9A-Za-z]{43}$")


# Helpers: the dev server seen from outside, and the sink as files on disk.


def sink_document(cli: Cli, path: Path = SINK) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((cli.cwd / path).read_text())
    return document


def sink_secrets(cli: Cli, path: Path = SINK) -> dict[str, str]:
    return {name: record["key"] for name, record in sink_document(cli, path)["keys"].items()}


def apply(cli: Cli, *args: str) -> None:
    run = cli("apply", "--auto-approve", *args)
    assert run.code == 0, run


def only_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# The first apply, and the second that changes nothing


def test_first_apply_creates_every_key_and_a_second_apply_changes_nothing(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys:\n  - gateway-us-east\n  - gateway-eu-west\n")

    first = cli("apply", "--auto-approve")

    assert first.code == 0, first
    assert "created gateway-us-east" in first.stdout
    assert "created gateway-eu-west" in first.stdout
    live = live_keys(dev_server)
    assert set(live) == {"gateway-us-east", "gateway-eu-west"}
    document = sink_document(cli)
    assert document["version"] == 1
    assert document["coderd_url"] == dev_server.url
    for name, key in live.items():
        record = document["keys"][name]
        assert SECRET_SHAPE.match(record["key"])
        assert record["key"][:11] == key["key_prefix"] == record["key_prefix"]
        assert record["id"] == key["id"]
        assert record["name"] == name
        assert record["coderd_url"] == dev_server.url
        assert datetime.fromisoformat(record["created_at"]) == datetime.fromisoformat(key["created_at"])
        assert gateway_status(dev_server, record["key"]) == IN
    assert stat.S_IMODE((cli.cwd / SINK).stat().st_mode) == 0o600

    second = cli("apply", "--auto-approve")

    assert second.code == 0, second
    assert "no changes" in second.stdout.lower()
    assert "created" not in second.stdout + second.stderr
    assert {name: key["id"] for name, key in live_keys(dev_server).items()} == {
        name: key["id"] for name, key in live.items()
    }
    assert sink_document(cli) == document


def test_apply_with_nothing_to_do_asks_nothing_even_without_a_terminal(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys: [a]\n")
    apply(cli)

    run = cli("apply", input="")

    assert run.code == 0, run
    assert "no changes" in run.stdout.lower()


def test_adding_and_removing_keys(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = live_keys(dev_server)
    cli.write_manifest("version: 1\nkeys: [beta, gamma]\n")

    plan = cli("plan")

    assert plan.code == 0, plan
    assert re.search(r"^\s*\+ create gamma\b", plan.stdout, re.M), plan
    delete_line = next(line for line in plan.stdout.splitlines() if re.match(r"^\s*- delete alpha\b", line))
    assert before["alpha"]["key_prefix"] in delete_line
    assert "age" in delete_line
    assert "never" in delete_line, "the last use of a key about to be deleted is shown"
    assert "beta" not in plan.stdout
    assert "Plan: 1 to create, 1 to delete, 0 to replace." in plan.stdout

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    after = live_keys(dev_server)
    assert set(after) == {"beta", "gamma"}
    assert after["beta"]["id"] == before["beta"]["id"]
    secrets = sink_secrets(cli)
    assert set(secrets) == {"beta", "gamma"}
    assert secrets["gamma"][:11] == after["gamma"]["key_prefix"]
    assert gateway_status(dev_server, secrets["gamma"]) == IN


# Repairing the sink


def test_a_deleted_sink_file_is_repaired_by_replacing_the_keys(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    old_keys = live_keys(dev_server)
    old_secrets = sink_secrets(cli)
    (cli.cwd / SINK).unlink()

    plan = cli("plan", "--format", "json")

    assert plan.code == 0, plan
    actions = json.loads(plan.stdout)["actions"]
    assert sorted((a["action"], a["name"], a["reason"]) for a in actions) == [
        ("replace", "alpha", "secret-missing"),
        ("replace", "beta", "secret-missing"),
    ]

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    new_keys = live_keys(dev_server)
    new_secrets = sink_secrets(cli)
    assert set(new_keys) == set(new_secrets) == {"alpha", "beta"}
    for name in ("alpha", "beta"):
        assert new_keys[name]["id"] != old_keys[name]["id"]
        assert new_secrets[name][:11] == new_keys[name]["key_prefix"]
        assert gateway_status(dev_server, new_secrets[name]) == IN
        assert gateway_status(dev_server, old_secrets[name]) == 401
    assert cli("plan", "--detailed-exitcode").code == 0


def test_a_sink_holding_another_keys_secret_is_stale_and_replaced(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = live_keys(dev_server)
    document = sink_document(cli)
    document["keys"]["alpha"]["key"] = document["keys"]["beta"]["key"]
    (cli.cwd / SINK).write_text(json.dumps(document))

    plan = cli("plan", "--format", "json")

    assert plan.code == 0, plan
    actions = json.loads(plan.stdout)["actions"]
    assert [(a["action"], a["name"], a["reason"]) for a in actions] == [("replace", "alpha", "secret-stale")]

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    after = live_keys(dev_server)
    assert after["alpha"]["id"] != before["alpha"]["id"]
    assert after["beta"]["id"] == before["beta"]["id"]
    secrets = sink_secrets(cli)
    assert secrets["alpha"][:11] == after["alpha"]["key_prefix"]
    assert gateway_status(dev_server, secrets["alpha"]) == IN
    assert gateway_status(dev_server, secrets["beta"]) == IN


def test_a_record_whose_key_vanished_is_a_warning_and_apply_removes_it(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    beta = live_keys(dev_server)["beta"]
    response = httpx.delete(
        f"{dev_server.url}{COLLECTIONS[dev_server.config.api]}/{beta['id']}",
        headers={"Coder-Session-Token": dev_server.token},
        verify=TLS,
    )
    assert response.status_code == 204
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    plan = cli("plan", "--format", "json", "--detailed-exitcode")

    assert plan.code == 2, plan
    document = json.loads(plan.stdout)
    assert document["actions"] == []
    assert any("beta" in warning for warning in document["warnings"])

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert set(sink_secrets(cli)) == {"alpha"}
    assert cli("plan", "--detailed-exitcode").code == 0


# The directory and env sinks


def test_directory_sink_writes_one_file_per_key_that_the_gateway_accepts(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest(
        "version: 1\n"
        "sink:\n  type: directory\n  path: gateway-keys\n"
        "keys: [gateway-us-east, gateway-eu-west]\n"
    )

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    live = live_keys(dev_server)
    directory = cli.cwd / "gateway-keys"
    for name, key in live.items():
        raw = (directory / name).read_bytes()
        secret = raw.decode()
        assert SECRET_SHAPE.match(secret), "the file holds just the secret, no trailing newline"
        assert secret[:11] == key["key_prefix"]
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
        # What a replica does with CODER_AI_GATEWAY_KEY_FILE: read the file, present its content.
        assert gateway_status(dev_server, secret) == IN
    sidecar = (directory / ".keysync.json").read_text()
    for name in live:
        assert (directory / name).read_text() not in sidecar
    assert cli("apply", "--auto-approve").stdout.lower().startswith("no changes")
    assert cli("plan", "--detailed-exitcode").code == 0

    cli.write_manifest(
        "version: 1\nsink:\n  type: directory\n  path: gateway-keys\nkeys: [gateway-eu-west]\n"
    )
    apply(cli, "--force")  # the gateway just used the key: deleting it needs --force

    assert set(live_keys(dev_server)) == {"gateway-eu-west"}
    assert not (directory / "gateway-us-east").exists(), "a deleted key's secret leaves the sink"
    assert "gateway-us-east" not in (directory / ".keysync.json").read_text()


@pytest.mark.parametrize(
    ("prefix", "variables"),
    [("", ("GATEWAY_US_EAST", "KEY_7ELEVEN")), ("GW_", ("GW_GATEWAY_US_EAST", "GW_7ELEVEN"))],
)
def test_env_file_sink_writes_upper_snake_variables(
    cli: Cli, dev_server: DevServer, prefix: str, variables: tuple[str, str]
) -> None:
    cli.write_manifest(
        "version: 1\n"
        f"sink:\n  type: file\n  path: secrets/gateway.env\n  format: env\n  prefix: '{prefix}'\n"
        "keys: [gateway-us-east, 7eleven]\n"
    )

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    live = live_keys(dev_server)
    path = cli.cwd / "secrets" / "gateway.env"
    lines = path.read_text().splitlines()
    assert f"# keysync coderd_url={dev_server.url}" in lines
    found = dict(line.split("=", 1) for line in lines if not line.startswith("#") and "=" in line)
    assert set(found) == set(variables)
    assert found[variables[0]][:11] == live["gateway-us-east"]["key_prefix"]
    assert found[variables[1]][:11] == live["7eleven"]["key_prefix"]
    for secret in found.values():
        assert gateway_status(dev_server, secret) == IN
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli("plan", "--detailed-exitcode").code == 0


# Confirmation


def test_apply_without_a_terminal_or_auto_approve_refuses_and_changes_nothing(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    run = cli("apply", input="yes\n")

    assert run.code == 1, run
    message = only_line(run.stderr)
    assert "terminal" in message
    assert "--auto-approve" in message
    assert "Traceback" not in run.stderr
    assert live_keys(dev_server) == {}
    assert not (cli.cwd / SINK).exists()


# Where things are


def test_relative_sink_paths_resolve_against_the_manifest_directory(cli: Cli) -> None:
    (cli.cwd / "deploy").mkdir()
    cli.write_manifest("version: 1\nkeys: [alpha]\n", name="deploy/keysync.yaml")

    run = cli("apply", "--auto-approve", "-f", "deploy/keysync.yaml")

    assert run.code == 0, run
    assert set(sink_secrets(cli, Path("deploy") / SINK)) == {"alpha"}
    assert not (cli.cwd / SINK).exists()


def test_url_flag_beats_env_which_beats_the_manifest(cli: Cli, dev_server: DevServer) -> None:
    nowhere = "http://127.0.0.1:9"
    cli.write_manifest(f"version: 1\ncoderd:\n  url: {nowhere}\nkeys: [alpha]\n")

    from_env = cli("plan", "--format", "json")
    cli.env["CODER_URL"] = nowhere
    from_flag = cli("plan", "--format", "json", "--url", dev_server.url)
    del cli.env["CODER_URL"]
    cli.write_manifest(f"version: 1\ncoderd:\n  url: {dev_server.url}\nkeys: [alpha]\n")
    from_manifest = cli("plan", "--format", "json")

    for run in (from_env, from_flag, from_manifest):
        assert run.code == 0, run
        assert json.loads(run.stdout)["coderd_url"] == dev_server.url


# Confirmation on a terminal


def test_apply_on_a_terminal_asks_and_only_yes_applies(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    declined = run_on_a_terminal(cli, "no\n", "apply")

    assert declined.code == 1, declined
    assert "+ create alpha" in declined.stderr, "the plan to confirm is shown on stderr"
    assert "yes" in declined.stderr, "the question says what to answer"
    assert "+ create alpha" not in declined.stdout
    assert live_keys(dev_server) == {}

    accepted = run_on_a_terminal(cli, "yes\n", "apply")

    assert accepted.code == 0, accepted
    assert set(live_keys(dev_server)) == {"alpha"}
    assert set(sink_secrets(cli)) == {"alpha"}
    assert "created alpha" in accepted.stdout


# API generations


@pytest.mark.parametrize("generation", list(COLLECTIONS))
def test_api_auto_finds_each_generation(cli: Cli, generation: str) -> None:
    config = DevServerConfig(port=0, token=OWNER_TOKEN, api=generation)
    with DevServer(config) as server:
        cli.env["CODER_URL"] = server.url
        cli.write_manifest("version: 1\ncoderd:\n  api: auto\nkeys: [alpha]\n")

        plan = cli("plan", "--format", "json")
        run = cli("apply", "--auto-approve")
        again = cli("plan", "--detailed-exitcode")

        assert plan.code == 0, plan
        assert json.loads(plan.stdout)["api"] == generation
        assert run.code == 0, run
        assert again.code == 0, again
        live = live_keys(server)
        assert set(live) == {"alpha"}
        assert sink_secrets(cli)["alpha"][:11] == live["alpha"]["key_prefix"]


# export, status


def test_export_omits_ignored_keys_and_feeds_validate(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\npolicy:\n  ignore: ['legacy-*']\nkeys: [alpha, beta]\n")
    apply(cli)
    create_out_of_band(dev_server, "legacy-old")

    export = cli("export")

    assert export.code == 0, export
    assert export.stderr == ""
    exported = yaml.safe_load(export.stdout)
    assert exported["version"] == 1
    assert exported["keys"] == ["alpha", "beta"], "ignored keys are not adopted"
    assert exported["coderd"]["url"] == dev_server.url
    (cli.cwd / "exported.yaml").write_text(export.stdout)

    validate = cli("validate", "-f", "exported.yaml")
    assert validate.code == 0, validate
    assert "exported.yaml" in validate.stdout

    # The exported manifest does not ignore legacy-old, so a plan from it would prune that key.
    plan = cli("plan", "-f", "exported.yaml", "--format", "json")
    assert plan.code == 0, plan
    actions = json.loads(plan.stdout)["actions"]
    assert [(a["action"], a["name"]) for a in actions] == [("delete", "legacy-old")]


def test_export_without_a_manifest_adopts_every_live_key(cli: Cli, dev_server: DevServer) -> None:
    create_out_of_band(dev_server, "first")
    create_out_of_band(dev_server, "second")

    export = cli("export")

    assert export.code == 0, export
    assert yaml.safe_load(export.stdout)["keys"] == ["first", "second"]
    (cli.cwd / "keysync.yaml").write_text(export.stdout)
    assert cli("validate").code == 0


def test_status_table_and_json(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    secrets = sink_secrets(cli)
    assert gateway_status(dev_server, secrets["alpha"]) == IN
    document = sink_document(cli)
    del document["keys"]["beta"]
    (cli.cwd / SINK).write_text(json.dumps(document))
    create_out_of_band(dev_server, "stray")
    live = live_keys(dev_server)

    table = cli("status")

    assert table.code == 0, table
    lines = table.stdout.rstrip("\n").splitlines()
    header = lines[0]
    assert header.split()[0] == "NAME"
    assert "KEY PREFIX" in header
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"alpha", "beta", "stray"}
    column = header.index("KEY PREFIX")
    for name, line in rows.items():
        assert line.index(live[name]["key_prefix"]) == column, "columns are aligned"
    assert "held" in rows["alpha"]
    assert "never" not in rows["alpha"], "alpha was used by the gateway"
    assert "missing" in rows["beta"]
    assert "never" in rows["beta"]
    assert "not listed" in rows["stray"]

    as_json = cli("status", "--format", "json")

    assert as_json.code == 0, as_json
    keys = {row["name"]: row for row in json.loads(as_json.stdout)["keys"]}
    assert set(keys) == {"alpha", "beta", "stray"}
    assert keys["alpha"]["sink"] == "held"
    assert keys["beta"]["sink"] == "missing"
    assert keys["alpha"]["key_prefix"] == live["alpha"]["key_prefix"]
    assert keys["alpha"]["id"] == live["alpha"]["id"]
    # The newest servers list last_heartbeat_at; status gives it under both names, the old one for scripts.
    for field in ("last_heartbeat_at", "last_used_at"):
        assert keys["alpha"][field].endswith("Z")
        assert datetime.fromisoformat(keys["alpha"][field]) == datetime.fromisoformat(
            live["alpha"]["last_heartbeat_at"]
        )
        assert keys["beta"][field] is None
    datetime.fromisoformat(keys["stray"]["created_at"])
    assert keys["stray"]["in_manifest"] is False
    assert keys["alpha"]["in_manifest"] is True


# Plan formats, streams and exit codes


def test_plan_json_has_every_documented_field(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    live = live_keys(dev_server)
    manifest = cli.write_manifest("version: 1\nkeys: [beta, gamma]\n")

    run = cli("plan", "--format", "json", "--replace", "beta")

    assert run.code == 0, run
    assert run.stderr == ""
    plan = json.loads(run.stdout)
    assert plan["format_version"] == 1
    assert isinstance(plan["keysync_version"], str) and plan["keysync_version"]
    assert plan["coderd_url"] == dev_server.url
    assert plan["api"] == "ai-gateway-keys"
    assert plan["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert SHA256_HEX.match(plan["live_fingerprint"])
    assert SHA256_HEX.match(plan["sink_fingerprint"])
    assert plan["summary"] == {"create": 1, "delete": 1, "replace": 1, "rotate": 0, "retire": 0}
    assert isinstance(plan["warnings"], list)
    actions = {action["name"]: action for action in plan["actions"]}
    assert actions["alpha"] == {
        "action": "delete",
        "name": "alpha",
        "id": live["alpha"]["id"],
        "key_prefix": live["alpha"]["key_prefix"],
        "live_name": "alpha",
        "reason": "not-in-manifest",
    }
    assert actions["beta"] == {
        "action": "replace",
        "name": "beta",
        "id": live["beta"]["id"],
        "key_prefix": live["beta"]["key_prefix"],
        "live_name": "beta",
        "reason": "requested",
    }
    assert actions["gamma"] == {"action": "create", "name": "gamma", "reason": "missing"}


def test_apply_json_report_parses_even_with_nothing_to_do(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    first = cli("apply", "--auto-approve", "--format", "json")
    assert first.code == 0, first
    assert json.loads(first.stdout)["summary"]["create"] == 1

    second = cli("apply", "--auto-approve", "--format", "json")

    assert second.code == 0, second
    report = json.loads(second.stdout)  # a pipeline parses apply's stdout whatever happened
    assert report["actions"] == []


def test_plan_json_with_no_changes(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    apply(cli)

    run = cli("plan", "--format", "json")

    assert run.code == 0, run
    plan = json.loads(run.stdout)
    assert plan["actions"] == []
    assert plan["summary"] == {"create": 0, "delete": 0, "replace": 0, "rotate": 0, "retire": 0}


def test_detailed_exitcode_is_2_with_changes_and_0_without(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    assert cli("plan").code == 0
    pending = cli("plan", "--detailed-exitcode")
    assert pending.code == 2, pending
    assert "+ create alpha" in pending.stdout
    assert cli("plan", "--detailed-exitcode", "--format", "json").code == 2

    apply(cli)

    settled = cli("plan", "--detailed-exitcode")
    assert settled.code == 0, settled
    assert "no changes" in settled.stdout.lower()


def test_data_goes_to_stdout_and_messages_to_stderr(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")

    plan = cli("plan", "--format", "json", "--out", "plan.json")
    assert plan.code == 0, plan
    assert json.loads(plan.stdout)["summary"]["create"] == 2
    assert "plan.json" in plan.stderr
    assert "plan.json" not in plan.stdout

    run = cli("apply", "--auto-approve")
    assert run.code == 0, run
    # The report of what apply did is data; progress off a terminal is one line per action.
    assert "Apply complete" in run.stdout
    assert "Apply complete" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if "alpha" in line]) == 1
    assert len([line for line in run.stderr.splitlines() if "beta" in line]) == 1

    report = cli("apply", "--auto-approve", "--replace", "alpha", "--format", "json")
    assert report.code == 0, report
    document = json.loads(report.stdout)
    assert [(a["action"], a["name"], a["result"]) for a in document["actions"]] == [
        ("replace", "alpha", "ok")
    ]
    assert document["actions"][0]["new_key_prefix"] == live_keys(dev_server)["alpha"]["key_prefix"]

    markdown = cli("plan", "--format", "markdown")
    assert markdown.code == 0, markdown
    assert markdown.stdout.startswith("#")
    assert markdown.stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--no-such-flag"),
        ("apply", "--auto-approve", "--parallelism", "many"),
        ("plan", "--format", "yaml"),
        ("plan", "--target"),
        ("plan", "--force"),
        ("no-such-command",),
    ],
)
def test_usage_errors_exit_1_with_a_message_on_stderr(
    cli: Cli, dev_server: DevServer, args: tuple[str, ...]
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    run = cli(*args)

    assert run.code == 1, run
    assert run.stdout == ""
    assert run.stderr.strip()
    assert "Traceback" not in run.stderr
    assert live_keys(dev_server) == {}


def test_version_and_help(cli: Cli) -> None:
    version = cli("--version")
    assert version.code == 0, version
    assert "keysync" in version.stdout
    for command in ("plan", "apply", "status", "export", "validate"):
        run = cli(command, "--help")
        assert run.code == 0, run
        assert "Example" in run.stdout, command


def test_apply_says_it_removed_the_record_of_a_key_that_no_longer_exists(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    assert cli("apply", "--auto-approve").code == 0
    delete_out_of_band(dev_server, live_keys(dev_server)["beta"]["id"])
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    plan = cli("plan")
    assert "sink holds a record for 'beta', whose key no longer exists: apply removes it" in plan.stdout
    run = cli("apply", "--auto-approve")
    assert run.code == 0, run
    assert "~ removed 1 stale sink record(s), whose keys no longer exist" in run.stdout
    report = json.loads(cli("apply", "--auto-approve", "--format", "json").stdout)
    assert report["notes"] == []  # nothing left to remove
    sink = json.loads((cli.cwd / "secrets" / "ai-gateway-keys.json").read_text())
    assert set(sink["keys"]) == {"alpha"}
