"""`keysync apply --audit-log FILE`: one JSON line per action carried out, appended, never a secret.

The installed keysync runs as a subprocess against the dev server; the trail is judged as a
compliance reader would: line by line, field by field, against what Coder and the sink show.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from keysync import __version__
from keysync.devserver import DevServer, DevServerConfig

from coderlive import create_out_of_band, delete_out_of_band, live_keys
from conftest import KEYSYNC, OWNER_TOKEN, Cli

SINK = Path("secrets/ai-gateway-keys.json")
SHA256_HEX = 64
REQUIRED = {
    "time",
    "action",
    "reason",
    "name",
    "id",
    "key_prefix",
    "result",
    "manifest_sha256",
    "keysync_version",
    "host",
    "user",
}


def sink_records(cli: Cli) -> dict[str, dict[str, Any]]:
    path = cli.cwd / SINK
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = json.loads(path.read_text())["keys"]
    return records


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_common_fields(line: dict[str, Any], manifest: Path) -> None:
    assert set(line) >= REQUIRED, line
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert line["manifest_sha256"] == sha256_of(manifest)
    assert line["keysync_version"] == __version__
    assert line["host"] == socket.gethostname()
    assert line["user"] == pwd.getpwuid(os.getuid()).pw_name


def test_each_action_gets_one_line_with_the_documented_fields_and_lines_are_appended(
    cli: Cli, dev_server: DevServer
) -> None:
    manifest = cli.write_manifest("version: 1\nkeys: [alpha, bravo, charlie]\n")
    assert cli("apply", "--auto-approve").code == 0
    before = live_keys(dev_server)
    secrets_before = {name: record["key"] for name, record in sink_records(cli).items()}
    stray = create_out_of_band(dev_server, "stray")
    delete_out_of_band(dev_server, before["bravo"]["id"])
    audit = cli.cwd / "audit.jsonl"

    run = cli("apply", "--auto-approve", "--replace", "alpha", "--audit-log", str(audit))

    assert run.code == 0, run
    after = live_keys(dev_server)
    lines = audit_lines(audit)
    assert len(lines) == 3, lines
    by_name = {line["name"]: line for line in lines}
    assert set(by_name) == {"alpha", "bravo", "stray"}
    for line in lines:
        assert_common_fields(line, manifest)
        assert line["result"] == "ok"
    delete, replace, create = by_name["stray"], by_name["alpha"], by_name["bravo"]
    assert (delete["action"], delete["reason"]) == ("delete", "not-in-manifest")
    assert (delete["id"], delete["key_prefix"]) == (stray["id"], stray["key_prefix"])
    assert (create["action"], create["reason"]) == ("create", "missing")
    assert (create["id"], create["key_prefix"]) == (after["bravo"]["id"], after["bravo"]["key_prefix"])
    assert (replace["action"], replace["reason"]) == ("replace", "requested")
    assert replace["old_id"] == before["alpha"]["id"]
    assert replace["new_id"] == replace["id"] == after["alpha"]["id"]
    assert replace["key_prefix"] == after["alpha"]["key_prefix"]

    second = cli("apply", "--auto-approve", "--replace", "charlie", "--audit-log", str(audit))
    assert second.code == 0, second
    appended = audit_lines(audit)
    assert appended[:3] == lines
    assert [(line["action"], line["name"]) for line in appended[3:]] == [("replace", "charlie")]

    nothing = cli("apply", "--auto-approve", "--audit-log", str(audit))
    assert nothing.code == 0, nothing
    assert audit_lines(audit) == appended

    secrets = [*secrets_before.values(), stray["key"], *(r["key"] for r in sink_records(cli).values())]
    text = audit.read_text()
    for secret in [OWNER_TOKEN, *secrets]:
        assert secret not in text


def test_a_failed_action_gets_a_line_with_result_failed(cli: Cli, dev_server: DevServer) -> None:
    # The command keeps what it was given, so the test knows the secret the audit must not show.
    store = "import sys; open('received.json', 'w').write(sys.stdin.read()); sys.exit(3)"
    sink = {"type": "exec", "command": ["python3", "-c", store]}
    manifest = cli.write_manifest(json.dumps({"version": 1, "sink": sink, "keys": ["alpha"]}))  # JSON is YAML
    audit = cli.cwd / "audit.jsonl"

    run = cli("apply", "--auto-approve", "--audit-log", str(audit))

    assert run.code == 1, run
    lines = audit_lines(audit)
    assert len(lines) == 1, lines
    line = lines[0]
    assert_common_fields(line, manifest)
    assert (line["action"], line["name"], line["reason"], line["result"]) == (
        "create",
        "alpha",
        "missing",
        "failed",
    )
    assert live_keys(dev_server) == {}  # the key whose secret could not be stored was deleted again
    received = json.loads((cli.cwd / "received.json").read_text())
    for secret in (received["key"], OWNER_TOKEN):
        assert secret not in audit.read_text()
        assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_an_unwritable_audit_log_fails_before_any_action(cli: Cli, dev_server: DevServer, where: str) -> None:
    (cli.cwd / "blocker").write_text("a regular file: nothing can be created under it\n")
    (cli.cwd / "logs").mkdir()
    audit = cli.cwd / ("blocker/audit.jsonl" if where == "under-a-file" else "logs")
    cli.write_manifest("version: 1\nkeys: [alpha, bravo]\n")

    run = cli("apply", "--auto-approve", "--audit-log", str(audit))

    assert run.code == 1, run
    assert "audit" in run.stderr
    assert "Traceback" not in run.stderr
    assert live_keys(dev_server) == {}
    assert sink_records(cli) == {}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make writes fail")
def test_a_failed_audit_write_fails_the_run_and_keeps_what_was_done(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, bravo, charlie]\n")

    run = cli("apply", "--auto-approve", "--parallelism", "1", "--audit-log", "/dev/full")

    assert run.code == 1, run
    assert "audit" in run.stderr
    live = live_keys(dev_server)
    assert live, "the action carried out before the audit write failed is kept"
    records = sink_records(cli)
    assert {name: key["id"] for name, key in live.items()} == {n: r["id"] for n, r in records.items()}
    for name, key in live.items():
        assert records[name]["key"][:11] == key["key_prefix"]


# --- when stdout or stderr goes away mid-apply ----------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[DevServer]:
    """Each request takes a while, so that a reader can go away while the apply runs."""
    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN, latency_ms=60)) as server:
        yield server


def start_apply(cli: Cli, server: DevServer, count: int, **streams: Any) -> subprocess.Popen[str]:
    cli.env["CODER_URL"] = server.url
    cli.write_manifest("version: 1\nkeys: [" + ", ".join(f"key-{i}" for i in range(count)) + "]\n")
    args = ["apply", "--auto-approve", "--parallelism", "1", "--audit-log", "audit.jsonl"]
    return subprocess.Popen([KEYSYNC, *args], cwd=cli.cwd, env=cli.env, text=True, **streams)


def test_a_log_collector_gone_from_stderr_mid_apply_skips_no_audit_line(
    cli: Cli, slow_server: DevServer
) -> None:
    with (cli.cwd / "stdout").open("w") as stdout:
        process = start_apply(cli, slow_server, 6, stdout=stdout, stderr=subprocess.PIPE)
        assert process.stderr is not None
        first = process.stderr.readline()
        process.stderr.close()  # the collector goes away: every later write to stderr is EPIPE
        code = process.wait(timeout=60)

    assert first.startswith("[1/6]"), first
    assert code == 1, "a run whose log was lost does not claim success"
    lines = audit_lines(cli.cwd / "audit.jsonl")
    assert sorted(line["name"] for line in lines) == [f"key-{i}" for i in range(6)]
    assert all(line["result"] == "ok" for line in lines)
    assert sorted(sink_records(cli)) == sorted(live_keys(slow_server))
    assert "Apply complete: 6 created" in (cli.cwd / "stdout").read_text(), "the report still went out"


def test_a_closed_stdout_sends_the_report_to_stderr_and_fails_the_run(
    cli: Cli, slow_server: DevServer
) -> None:
    process = start_apply(cli, slow_server, 4, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()  # nobody reads the report
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 1, stderr
    assert len(audit_lines(cli.cwd / "audit.jsonl")) == 4
    assert "Apply complete: 4 created" in stderr
    assert stderr.rstrip().endswith("keysync: error: could not write to stdout: its reader went away")
    assert "Traceback" not in stderr and OWNER_TOKEN not in stderr
