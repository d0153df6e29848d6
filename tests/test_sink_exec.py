"""The exec sink runs real commands: the record on stdin, exit 0 means stored."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from keysync.devserver import DevServer
from keysync.errors import SinkError
from keysync.keys import SecretRecord
from keysync.manifest.sinks import ExecSinkConfig
from keysync.secret import Secret
from keysync.sinks.base import SinkContext
from keysync.sinks.exec import ExecSink

from coderlive import live_keys
from conftest import Cli

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


def test_no_lock_no_local_paths(tmp_path: Path) -> None:
    exec_sink = sink(tmp_path, ["true"])
    with exec_sink.lock(None):
        assert exec_sink.local_paths() == []
    assert exec_sink.describe() == "exec true"


# --- end to end --------------------------------------------------------------------------------------


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

    run = cli("apply", "--auto-approve")

    assert run.code == 1, run
    assert "missing-hook" in run.stderr
    assert sorted(live_keys(dev_server)) == []
