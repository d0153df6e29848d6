"""The suite's fork server (tests/forkserver.py) answers as the installed command does: the same
exit codes, stdout and stderr, for data, errors, usage errors and input on stdin."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from keysync.devserver import DevServer

from conftest import KEYSYNC, Cli, fork_server, start_keysync

MANIFEST = """\
version: 1
keys:
  - name: alpha
  - name: beta
sink:
  type: file
  path: secrets/keys.json
"""

RUNS: list[tuple[tuple[str, ...], str | None]] = [
    (("--version",), None),
    (("validate",), None),
    (("plan", "--format", "json"), None),
    (("plan", "--detailed-exitcode"), None),
    (("plan", "--no-such-flag"), None),
    (("status", "--format", "json"), None),
    (("apply",), None),  # no terminal: refused
    (("import", "alpha"), "not a key at all"),
    (("watch", "--interval", "0s"), None),
]


def installed(cli: Cli, args: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
    done = subprocess.run(
        [KEYSYNC, *args], cwd=cli.cwd, env=cli.env, input=input, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def forked(cli: Cli, args: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
    server = fork_server(cli.env)
    if server is None:
        pytest.skip("every run starts the installed command (KEYSYNC_TEST_EXEC or coverage)")
    done = server.run(list(args), cli.cwd, cli.env, input, 60)
    return done.code, done.stdout, done.stderr


def without_times(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z|\d+(\.\d+)? ?(ms|s)\b", "<time>", text)


@pytest.mark.parametrize(("args", "input"), RUNS, ids=[" ".join(args) for args, _ in RUNS])
def test_a_forked_run_answers_as_the_installed_command(
    cli: Cli, dev_server: DevServer, args: tuple[str, ...], input: str | None
) -> None:
    cli.write_manifest(MANIFEST)
    first = forked(cli, args, input)
    second = installed(cli, args, input)
    assert first[0] == second[0], (first, second)
    assert without_times(first[1]) == without_times(second[1])
    assert without_times(first[2]) == without_times(second[2])


def test_a_forked_run_has_its_own_environment_and_directory(cli: Cli, tmp_path: Path) -> None:
    cli.write_manifest(MANIFEST)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keysync.yaml").write_text(MANIFEST.replace("beta", "gamma"))
    code, stdout, _ = forked(Cli(elsewhere, cli.env), ("plan", "--format", "json"), None)
    assert code == 0
    assert {a["name"] for a in json.loads(stdout)["actions"]} == {"alpha", "gamma"}
    tokenless = {name: value for name, value in cli.env.items() if name != "CODER_SESSION_TOKEN"}
    code, _, stderr = forked(Cli(cli.cwd, tokenless), ("plan",), None)
    assert code == 1 and "no session token" in stderr, stderr  # nothing kept from the run before


def test_a_forked_background_run_takes_signals_and_ends_as_the_installed_command(cli: Cli) -> None:
    cli.write_manifest(MANIFEST)
    if fork_server(cli.env) is None:
        pytest.skip("every run starts the installed command (KEYSYNC_TEST_EXEC or coverage)")
    outcomes = []
    for forked_run in (True, False):
        env = cli.env if forked_run else {**cli.env, "PYTHONSAFEPATH": "1"}  # PYTHON*: the installed one
        watch = start_keysync(["watch", "--interval", "1h"], cli.cwd, env, stderr=subprocess.PIPE, text=True)
        assert watch.stderr is not None
        first = watch.stderr.readline()
        watch.send_signal(signal.SIGTERM)
        code = watch.wait(timeout=30)
        rest = watch.stderr.read()
        watch.stderr.close()
        outcomes.append((code, '"event": "start"' in first, '"event": "stop"' in rest))
        sleeper = start_keysync(["watch", "--interval", "1h"], cli.cwd, env, stderr=subprocess.DEVNULL)
        sleeper.kill()
        outcomes.append((sleeper.wait(timeout=30), True, True))
    assert outcomes[:2] == outcomes[2:] == [(0, True, True), (-signal.SIGKILL, True, True)]
