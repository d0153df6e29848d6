"""The exec sink runs real commands: the record on stdin, exit 0 means stored."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysync.devserver import DevServer, DevServerConfig
from keysync.errors import SinkError
from keysync.keys import SecretRecord
from keysync.manifest.sinks import ExecSinkConfig
from keysync.secret import Secret
from keysync.sinks.base import SinkContext
from keysync.sinks.exec import ExecSink

from coderlive import create_out_of_band, live_keys
from conftest import OWNER_TOKEN, Cli

URL = "http://127.0.0.1:7080"
PYTHON = sys.executable
# Appends its stdin, one JSON document a line, to the file named by its argument (cwd-relative).
APPEND = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"


def record(name: str) -> SecretRecord:
    secret = f"sk{uuid.uuid4().hex}"
    return SecretRecord(name, Secret(secret), str(uuid.uuid4()), secret[:11], "2026-01-02T03:04:05Z", URL)


def sink(
    tmp_path: Path, command: list[str], remove: list[str] | None = None, timeout: float = 10
) -> ExecSink:
    config = ExecSinkConfig(command=command, remove_command=remove)
    return ExecSink(config, SinkContext(tmp_path, URL, timeout=timeout))


def received(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_command_receives_the_record_on_stdin_in_the_manifest_directory(tmp_path: Path) -> None:
    item = record("alpha")
    sink(tmp_path, [PYTHON, "-c", APPEND, "got.jsonl"]).store(item)
    assert received(tmp_path / "got.jsonl") == [item.document()]


def test_a_failing_command_names_the_key_the_exit_code_and_its_stderr_masked(tmp_path: Path) -> None:
    script = (
        "import sys; data = sys.stdin.read(); "
        "sys.stderr.write('vault said no\\n' + data + '\\n' + 'more\\n' * 20); sys.exit(3)"
    )
    item = record("alpha")
    with pytest.raises(SinkError) as raised:
        sink(tmp_path, [PYTHON, "-c", script]).store(item)
    message = str(raised.value)
    assert "storing key 'alpha'" in message and "exit code 3" in message
    assert "vault said no" in message and "**********" in message and message.endswith(" ...")
    assert item.key.reveal() not in message and "\n" not in message


def test_a_command_killed_by_a_signal(tmp_path: Path) -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    with pytest.raises(SinkError, match="killed by SIGTERM"):
        sink(tmp_path, [PYTHON, "-c", script]).store(record("alpha"))


def test_a_timeout_kills_the_command_and_what_it_started(tmp_path: Path) -> None:
    script = "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    started = time.monotonic()
    with pytest.raises(SinkError, match=r"did not finish within 0\.5s and was killed"):
        sink(tmp_path, [PYTHON, "-c", script], timeout=0.5).store(record("alpha"))
    assert time.monotonic() - started < 5


def test_stdout_is_discarded_however_much_there_is(tmp_path: Path) -> None:
    script = "import sys; sys.stdin.read(); sys.stdout.write('x' * 1_000_000)"
    sink(tmp_path, [PYTHON, "-c", script]).store(record("alpha"))


def test_a_command_that_ignores_stdin_is_fine(tmp_path: Path) -> None:
    sink(tmp_path, ["true"]).store(record("alpha"))


def test_remove_command_receives_name_id_and_url(tmp_path: Path) -> None:
    seen = sink(tmp_path, ["true"], remove=[PYTHON, "-c", APPEND, "removed.jsonl"])
    item = record("alpha")
    seen.store(item)
    seen.remove("alpha")
    seen.remove("beta")
    assert received(tmp_path / "removed.jsonl") == [
        {"name": "alpha", "id": item.id, "coderd_url": URL},
        {"name": "beta", "id": "", "coderd_url": URL},
    ]


def test_a_failing_remove_command(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="removing key 'alpha' \\(exit code 1\\)"):
        sink(tmp_path, ["true"], remove=["false"]).remove("alpha")


def test_without_remove_command_remove_does_nothing(tmp_path: Path) -> None:
    sink(tmp_path, ["false"]).remove("alpha")


def test_it_cannot_be_read_back(tmp_path: Path) -> None:
    view = sink(tmp_path, ["true"]).read()
    assert view.entries == {} and not view.readable


def test_check_writable_finds_the_executables(tmp_path: Path) -> None:
    hook = tmp_path / "hooks" / "store.sh"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\ncat > stored.json\n")
    hook.chmod(0o755)
    sink(tmp_path, ["./hooks/store.sh"], remove=["true"]).check_writable()
    sink(tmp_path, [str(hook)]).check_writable()
    sink(tmp_path, ["./hooks/store.sh"]).store(record("alpha"))
    assert json.loads((tmp_path / "stored.json").read_text())["name"] == "alpha"

    with pytest.raises(SinkError, match="not found on PATH"):
        sink(tmp_path, ["keysync-no-such-command"]).check_writable()
    with pytest.raises(SinkError, match="not an executable file"):
        sink(tmp_path, ["true"], remove=["./hooks/missing.sh"]).check_writable()
    hook.chmod(0o644)
    with pytest.raises(SinkError, match="not an executable file"):
        sink(tmp_path, ["./hooks/store.sh"]).check_writable()


def test_the_environment_comes_from_the_context(tmp_path: Path) -> None:
    script = "import os, sys; sys.stdin.read(); sys.exit(0 if os.environ.get('HOOK') == 'yes' else 9)"
    env = {"HOOK": "yes", "PATH": os.environ["PATH"]}
    context = SinkContext(tmp_path, URL, env, timeout=10)
    ExecSink(ExecSinkConfig(command=[PYTHON, "-c", script]), context).store(record("alpha"))
    with pytest.raises(SinkError, match="exit code 9"):
        sink(tmp_path, [PYTHON, "-c", script]).store(record("alpha"))


def test_the_lock_and_the_only_local_path_are_the_journal_beside_the_manifest(tmp_path: Path) -> None:
    exec_sink = sink(tmp_path, ["true"])
    with exec_sink.lock(None):
        assert (tmp_path / ".keysync-exec-journal.json.lock").is_file()
    assert exec_sink.local_paths() == [tmp_path / ".keysync-exec-journal.json"]
    assert exec_sink.describe() == "exec true"


def test_the_journal_names_what_was_delivered_and_holds_no_secret(tmp_path: Path) -> None:
    delivered, refused = record("alpha"), record("beta")
    sink(tmp_path, ["true"]).store(delivered)
    with pytest.raises(SinkError):
        sink(tmp_path, ["false"]).store(dataclasses.replace(delivered, id="other"))
    sink(tmp_path, ["true"]).store(refused)
    sink(tmp_path, ["true"]).remove("beta")

    journal = tmp_path / ".keysync-exec-journal.json"
    assert journal.stat().st_mode & 0o777 == 0o600
    assert sink(tmp_path, ["true"]).read().delivered == {"alpha": delivered.id}
    text = journal.read_text()
    assert delivered.key.reveal() not in text and refused.key.reveal() not in text
    assert json.loads(text)["deployments"][URL]["alpha"] == {"delivered": delivered.id, "handed": "other"}


# --- end to end --------------------------------------------------------------------------------------


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN, seed=7, api="ai-gateway-keys")) as server:
        yield server


def manifest(command: list[str], keys: list[str]) -> str:
    sink_settings = {"type": "exec", "command": command}
    return json.dumps({"version": 1, "sink": sink_settings, "keys": keys})  # JSON is YAML


def test_apply_delivers_each_record_to_the_command(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(manifest([PYTHON, "-c", APPEND, "got.jsonl"], ["alpha", "beta"]))

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    records = {item["name"]: item for item in received(cli.cwd / "got.jsonl")}
    assert sorted(records) == ["alpha", "beta"]
    assert all(item["key"][:11] == item["key_prefix"] for item in records.values())
    assert all(item["coderd_url"] == dev_server.url for item in records.values())
    plan = cli("plan")
    assert "cannot be read back" in plan.stdout + plan.stderr
    assert all(item["key"] not in run.stdout + run.stderr + plan.stdout for item in records.values())


def test_a_failing_command_leaves_no_key_behind(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(manifest(["false"], ["alpha"]))

    run = cli("apply", "--auto-approve")

    assert run.code == 1, run
    assert "exit code 1" in run.stdout + run.stderr
    assert sorted(live_keys(dev_server)) == []


def test_apply_refuses_a_missing_command_before_creating_anything(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(manifest(["./missing-hook"], ["alpha"]))

    plan = cli("plan")
    assert plan.code == 1 and "apply would fail: exec sink: './missing-hook'" in plan.stderr, plan
    run = cli("apply", "--auto-approve")

    assert run.code == 1, run
    assert "missing-hook" in run.stderr
    assert sorted(live_keys(dev_server)) == []


# --- the journal: a delivery cut short shows in the next plan -------------------------------------

# Stores what it is handed, except the key `victim` until a file `accept` exists: that one it
# answers by killing keysync, as if the machine died before the command could say "stored".
STORE_OR_DIE = """\
import json, os, signal, sys, time

record = json.load(sys.stdin)
if record["name"] == "victim" and not os.path.exists("accept"):
    open("victim.json", "w").write(json.dumps(record))
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(2)
    sys.exit(1)
with open("got.jsonl", "a") as out:
    out.write(json.dumps(record) + "\\n")
"""


def test_a_delivery_never_confirmed_shows_as_secret_missing_and_is_replaced(
    cli: Cli, dev_server: DevServer
) -> None:
    (cli.cwd / "store.py").write_text(STORE_OR_DIE)
    cli.write_manifest(manifest([PYTHON, "store.py"], ["steady", "victim"]))

    died = cli("apply", "--auto-approve")
    assert died.code == -9, died  # keysync was killed mid-delivery
    victim = live_keys(dev_server)["victim"]

    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan
    actions = {a["name"]: a for a in json.loads(plan.stdout)["actions"]}
    assert (actions["victim"]["action"], actions["victim"]["reason"]) == ("replace", "secret-missing")
    assert actions["victim"]["id"] == victim["id"]
    # steady may have been delivered, handed over, or not yet created when keysync died
    assert actions.get("steady", {}).get("reason", "missing") in ("secret-missing", "missing")
    rows = {row["name"]: row["sink"] for row in json.loads(cli("status", "--format", "json").stdout)["keys"]}
    assert rows["victim"] == "missing"

    (cli.cwd / "accept").touch()
    healed = cli("apply", "--auto-approve")
    assert healed.code == 0, healed
    assert cli("plan", "--detailed-exitcode").code == 0
    live = live_keys(dev_server)
    got = {item["name"]: item for item in received(cli.cwd / "got.jsonl")}
    assert {name: got[name]["id"] for name in live} == {name: key["id"] for name, key in live.items()}
    secrets = [item["key"] for item in got.values()] + [
        json.loads((cli.cwd / "victim.json").read_text())["key"]
    ]
    journal = (cli.cwd / ".keysync-exec-journal.json").read_text()
    assert not [secret for secret in secrets if secret in journal + healed.stdout + healed.stderr]


def test_keys_handed_over_before_there_was_a_journal_are_still_assumed_held(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest(manifest([PYTHON, "-c", APPEND, "got.jsonl"], ["alpha", "beta"]))
    assert cli("apply", "--auto-approve").code == 0
    (cli.cwd / ".keysync-exec-journal.json").unlink()  # as an older keysync left it: no journal

    plan = cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan
    assert "No changes" in plan.stdout
    status = cli("status", "--format", "json")
    assert {row["sink"] for row in json.loads(status.stdout)["keys"]} == {"unknown"}


def test_plan_status_and_the_preflight_never_run_the_manifests_commands(
    cli: Cli, dev_server: DevServer
) -> None:
    ran = "import sys; open('ran-' + sys.argv[1], 'w').close()"
    sink_settings = {
        "type": "exec",
        "command": [PYTHON, "-c", ran, "command"],
        "remove_command": [PYTHON, "-c", ran, "remove"],
    }
    cli.write_manifest(json.dumps({"version": 1, "sink": sink_settings, "keys": ["alpha"]}))
    create_out_of_band(dev_server, "unlisted")  # so that plan has a delete to show as well

    runs = [
        cli(*args) for args in (["plan", "--out", "saved.json"], ["plan", "--format", "json"], ["status"])
    ]
    assert [run.code for run in runs] == [0, 0, 0], runs
    assert "+ create alpha" in runs[0].stdout and "- delete unlisted" in runs[0].stdout, runs[0]
    assert not list(cli.cwd.glob("ran-*")), "a manifest's command ran outside apply"
    assert not (cli.cwd / ".keysync-exec-journal.json").exists(), "plan wrote the journal"


def test_in_a_git_work_tree_apply_wants_the_journal_ignored(cli: Cli, dev_server: DevServer) -> None:
    subprocess.run(["git", "init", "-q", str(cli.cwd)], check=True, capture_output=True)
    cli.write_manifest(manifest([PYTHON, "-c", APPEND, "got.jsonl"], ["alpha"]))

    refused = cli("apply", "--auto-approve")
    assert refused.code == 1, refused
    assert "add the line `/.keysync-exec-journal.json*`" in refused.stderr
    assert sorted(live_keys(dev_server)) == []

    (cli.cwd / ".gitignore").write_text("/.keysync-exec-journal.json*\n")
    assert cli("apply", "--auto-approve").code == 0
    assert sorted(live_keys(dev_server)) == ["alpha"]
