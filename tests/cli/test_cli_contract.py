"""Points of the contract that a user meets at the command line."""

from __future__ import annotations

import json
import os
import subprocess

from keysync.devserver import DevServer, DevServerConfig

from coderlive import live_keys
from conftest import KEYSYNC, Cli


def test_an_exec_command_relative_to_a_relative_manifest_runs_in_its_directory(
    cli: Cli, dev_server: DevServer
) -> None:
    store = cli.cwd / "store.sh"
    store.write_text('#!/bin/sh\ncat >> "$(pwd)/records.jsonl"; echo >> "$(pwd)/records.jsonl"\n')
    store.chmod(0o755)
    cli.write_manifest('version: 1\nsink:\n  type: exec\n  command: ["./store.sh"]\nkeys: [alpha]\n')

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    records = [json.loads(line) for line in (cli.cwd / "records.jsonl").read_text().split("\n") if line]
    assert [record["name"] for record in records] == ["alpha"]
    assert set(live_keys(dev_server)) == {"alpha"}


def test_an_empty_manifest_with_prune_needs_force_even_if_a_protected_key_stays(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [gone, kept]\n")
    assert cli("apply", "--auto-approve").code == 0
    cli.write_manifest("version: 1\npolicy:\n  protect: [kept]\nkeys: []\n")

    refused = cli("apply", "--auto-approve")

    assert refused.code == 1 and "lists no keys" in refused.stderr, refused
    assert set(live_keys(dev_server)) == {"gone", "kept"}
    assert cli("apply", "--auto-approve", "--force").code == 0
    assert set(live_keys(dev_server)) == {"kept"}


def test_a_saved_plan_for_another_deployment_says_so_before_touching_it(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("plan", "--out", "plan.json").code == 0
    with DevServer(DevServerConfig(port=0, token=dev_server.token)) as other:
        refused = cli("apply", "plan.json", "--url", other.url)
        assert live_keys(other) == {}
    assert refused.code == 1
    assert "made for" in refused.stderr and dev_server.url in refused.stderr, refused


def test_credentials_in_the_url_are_refused_and_not_echoed(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    run = cli("plan", "--url", "http://admin:hunter2secret@127.0.0.1:9")
    assert run.code == 1
    assert "credentials" in run.stderr and "hunter2secret" not in run.stderr + run.stdout


def test_shell_completion_is_clicks() -> None:
    env = {**os.environ, "_KEYSYNC_COMPLETE": "bash_source"}
    done = subprocess.run([KEYSYNC], env=env, capture_output=True, text=True)
    assert done.returncode == 0
    assert "_keysync_completion" in done.stdout


def test_formats_are_honoured_by_every_command(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("apply", "--auto-approve").code == 0
    assert json.loads(cli("validate", "--format", "json").stdout)["valid"] is True
    assert json.loads(cli("export", "--format", "json").stdout)["keys"] == ["alpha"]
    assert cli("status", "--format", "markdown").stdout.startswith("| NAME |")
    assert json.loads(cli("apply", "--auto-approve", "--format", "json").stdout)["result"] == "ok"
