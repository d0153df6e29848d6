"""`keysync watch` whose log collector on stderr goes away: the watch goes on reconciling and
auditing, its log lines lost, and once stopped it exits 1 (its output was lost), never with a
traceback. The installed keysync as a subprocess against the dev server."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from watching import DEADLINE, sink_records, until, write_atomically

from conftest import KEYSYNC, Cli


@pytest.fixture
def watch_with_piped_stderr(cli: Cli) -> Iterator[subprocess.Popen[bytes]]:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    argv = [KEYSYNC, "watch", "--interval", "1s", "--apply", "--audit-log", "audit.jsonl"]
    process = subprocess.Popen(
        argv,
        cwd=cli.cwd,
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=DEADLINE)


def audited(cwd: Path) -> list[tuple[str, str]]:
    path = cwd / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(entry["action"], entry["name"]) for entry in map(json.loads, lines)]


def test_watch_goes_on_reconciling_and_auditing_when_stderr_goes_away(
    cli: Cli, watch_with_piped_stderr: subprocess.Popen[bytes]
) -> None:
    process = watch_with_piped_stderr
    assert process.stderr is not None
    assert json.loads(process.stderr.readline())["event"] == "start"
    until(lambda: set(sink_records(cli.cwd)) == {"alpha"}, "alpha")

    process.stderr.close()  # the log collector goes away: every later write meets EPIPE
    write_atomically(cli.cwd / "keysync.yaml", "version: 1\nkeys: [alpha, bravo]\n")
    until(lambda: ("create", "bravo") in audited(cli.cwd), "bravo audited after stderr went away")
    write_atomically(cli.cwd / "keysync.yaml", "version: 1\nkeys: [bravo]\n")
    until(lambda: ("delete", "alpha") in audited(cli.cwd), "alpha's delete audited")

    assert process.poll() is None  # still watching
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE) == 1  # stopped cleanly, honest that its log was lost
    assert audited(cli.cwd) == [("create", "alpha"), ("create", "bravo"), ("delete", "alpha")]
    assert set(sink_records(cli.cwd)) == {"bravo"}
