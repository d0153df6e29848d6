"""A failing sink stops the apply: a full disk, OpenBao gone, the sink directory removed, a
planted symlink or a foreign file. Through the installed `keysync`, against the dev server, with
real files and a real OpenBao.

A full disk is the file size limit (RLIMIT_FSIZE) of the keysync process: every write beyond it
fails with EFBIG, as writes to a full disk fail with ENOSPC, and nothing needs root.
"""

from __future__ import annotations

import gc
import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keysync.devserver import DevServer, DevServerConfig
from keysync.engine.session import Options, Session
from keysync.engine.watch import EventLog, Watcher, WatchSettings
from keysync.keys import SecretRecord

from baoserver import start_bao, stop_bao
from coderlive import delete_out_of_band, live_keys
from conftest import CAPTURED, KEYSYNC, OWNER_TOKEN, Cli, Run, base_env, start_keysync

NAMES = [f"gw-{i:02d}" for i in range(10)]
# The most actions of one apply that can be in flight with --parallelism P: P holding a request,
# and max(4, P // 4) more waiting for their secret's write (engine/applier.py).
IN_FLIGHT = {1: 5, 2: 6}
SINKS = {
    "file": "sink:\n  type: file\n  path: secrets/keys.json\n",
    "directory": "sink:\n  type: directory\n  path: keys\n",
}
LIMITED = "; ".join(
    [
        "import os, resource, sys",
        "resource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0}))",
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]
)


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    """The current generation, named: these tests are about sinks, not API detection."""
    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN, seed=7, api="ai-gateway-keys")) as server:
        yield server


def manifest(names: list[str], sink: str) -> str:
    keys = "".join(f"  - {name}\n" for name in names)
    return f"version: 1\n{sink}policy:\n  max_deletes: 100\nkeys:\n{keys}"


def replace_all(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--replace", name)]


def on_full_disk(cli: Cli, limit: int, *args: str) -> Run:
    """keysync with no file allowed to grow beyond `limit` bytes (pipes are not files)."""
    # Unmeasured by coverage, whose own data file could not be written under the limit either.
    env = {k: v for k, v in cli.env.items() if not k.startswith("COVERAGE_")}
    done = subprocess.run(
        [sys.executable, "-c", LIMITED.format(limit), KEYSYNC, *args],
        cwd=cli.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    run = Run(list(args), done.returncode, done.stdout, done.stderr)
    cli.runs.append(run)
    CAPTURED.append(run.stdout + run.stderr)
    return run


def held_secrets(cwd: Path, sink_type: str) -> dict[str, str]:
    """Each name's secret as the sink holds it, read as a gateway would."""
    if sink_type == "file":
        path = cwd / "secrets" / "keys.json"
        return {n: r["key"] for n, r in json.loads(path.read_text())["keys"].items()} if path.exists() else {}
    directory = cwd / "keys"
    sidecar = directory / ".keysync.json"
    listed = json.loads(sidecar.read_text())["keys"] if sidecar.exists() else {}
    return {n: (directory / n).read_text() for n in listed if (directory / n).exists()}


def assert_every_live_key_is_held(cwd: Path, sink_type: str, server: DevServer) -> dict[str, Any]:
    live = live_keys(server)
    held = held_secrets(cwd, sink_type)
    orphans = [name for name, key in live.items() if held.get(name, "")[:11] != key["key_prefix"]]
    assert not orphans, f"live keys whose secret the sink does not hold: {orphans}"
    return live


def one_error_line(run: Run) -> str:
    errors = [line for line in run.stderr.splitlines() if line.startswith("keysync: error:")]
    assert len(errors) == 1, run
    assert "Traceback" not in run.stdout + run.stderr, run
    return errors[0]


# --- a full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize("sink_type", ["file", "directory"])
def test_a_full_disk_is_found_before_a_rotation_destroys_any_key(
    cli: Cli, dev_server: DevServer, sink_type: str
) -> None:
    cli.write_manifest(manifest(NAMES, SINKS[sink_type]))
    assert cli("apply", "--auto-approve").code == 0
    before = live_keys(dev_server)
    held = held_secrets(cli.cwd, sink_type)

    # 600 bytes: less than one record, so nothing can be stored (an empty probe file would fit).
    run = on_full_disk(cli, 600, "apply", "--auto-approve", *replace_all(NAMES))

    assert run.code == 1, run
    assert "is not writable: File too large" in one_error_line(run)
    assert live_keys(dev_server) == before, "a key was touched although the sink could take no secret"
    assert held_secrets(cli.cwd, sink_type) == held
    assert not [p for p in cli.cwd.rglob(".keysync-probe*")], "the probe file was left behind"


@pytest.mark.parametrize(("sink_type", "fmt"), [("file", "json"), ("directory", "text")])
def test_a_disk_that_fills_mid_apply_stops_it_and_the_next_plan_shows_what_is_left(
    cli: Cli, dev_server: DevServer, sink_type: str, fmt: str
) -> None:
    names = [f"fill-{i:02d}" for i in range(16)]
    cli.write_manifest(manifest(names, SINKS[sink_type]))

    # Room for the probe and a handful of records, not for sixteen.
    run = on_full_disk(cli, 2000, "apply", "--auto-approve", "--parallelism", "1", "--format", fmt)

    assert run.code == 1, run
    assert "File too large" in one_error_line(run)
    created, failed, not_started = _report(run, fmt)
    assert created and not_started, run
    assert len(failed) <= IN_FLIGHT[1], f"more actions than can be in flight failed: {failed}"
    assert sorted(created + failed + not_started) == names
    live = assert_every_live_key_is_held(cli.cwd, sink_type, dev_server)
    assert sorted(live) == sorted(created), "a key whose secret could not be stored is left in Coder"

    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan
    pending = {a["name"]: (a["action"], a["reason"]) for a in json.loads(plan.stdout)["actions"]}
    assert pending == {name: ("create", "missing") for name in failed + not_started}

    healed = cli("apply", "--auto-approve")
    assert healed.code == 0, healed
    assert sorted(assert_every_live_key_is_held(cli.cwd, sink_type, dev_server)) == names


def _report(run: Run, fmt: str, why: str = "File too large") -> tuple[list[str], list[str], list[str]]:
    """Created, failed and not started names, from apply's report."""
    if fmt == "json":
        report = json.loads(run.stdout)
        assert report["result"] == "failed" and why in report["sink_failure"], run
        actions = report["actions"]
        created = [a["name"] for a in actions if a["result"] == "ok"]
        failed = [a["name"] for a in actions if a["result"] == "failed"]
        return created, failed, [a["name"] for a in report["not_started"]]
    lines = run.stdout.splitlines()
    assert lines[-1].startswith("Apply failed: the sink failed, so nothing more was started"), run
    created = [line.split()[2] for line in lines if line.startswith("  + created ")]
    failed = [line.split()[4].rstrip(":") for line in lines if line.startswith("  ! failed to create ")]
    not_started = [line.split()[-1] for line in lines if line.startswith("  . not started: ")]
    return created, failed, not_started


# --- OpenBao stopped mid-rotation ----------------------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[DevServer]:
    with DevServer(
        DevServerConfig(port=0, token=OWNER_TOKEN, seed=11, latency_ms=60, api="ai-gateway-keys")
    ) as server:
        yield server


def test_openbao_stopped_mid_rotation_leaves_the_keys_not_started_untouched(
    tmp_path: Path, slow_server: DevServer
) -> None:
    names = [f"bao-{i:02d}" for i in range(12)]
    home = tmp_path / "bao-home"
    home.mkdir()
    with httpx.Client(timeout=10) as client:
        process, bao = start_bao(home, client)
        try:
            env = base_env() | {
                "CODER_URL": slow_server.url,
                "CODER_SESSION_TOKEN": OWNER_TOKEN,
                "VAULT_ADDR": bao.address,
                "VAULT_TOKEN": bao.root_token,
            }
            cli = Cli(tmp_path, env)
            cli.write_manifest(manifest(names, "sink:\n  type: vault\n"))
            assert cli("apply", "--auto-approve").code == 0
            listed = bao.ok("LIST", "secret/metadata/keysync")["data"]["keys"]
            assert "keysync-preflight" not in listed, "the preflight's probe record was left in Vault"
            before = live_keys(slow_server)
            rotation = _rotate_and_stop_bao_after_the_first(cli, names, process)
        finally:
            stop_bao(process)

    assert rotation.code == 1, rotation
    assert "Traceback" not in rotation.stdout + rotation.stderr
    _created, failed, not_started = _report(rotation, "json", "vault http://127.0.0.1")
    assert not_started, "the apply went on after OpenBao was gone"
    assert len(failed) <= IN_FLIGHT[2], f"more actions than can be in flight failed: {failed}"
    live = live_keys(slow_server)
    for name in not_started:
        assert live[name]["id"] == before[name]["id"], f"{name} was not started, yet it changed"
    lost = [name for name in names if name not in live]
    assert sorted(lost) == sorted(failed), "a key was lost that no failed action accounts for"
    assert len(live) >= len(names) - IN_FLIGHT[2]


def _rotate_and_stop_bao_after_the_first(cli: Cli, names: list[str], bao: subprocess.Popen[bytes]) -> Run:
    args = ["apply", "--auto-approve", "--parallelism", "2", "--format", "json", *replace_all(names)]
    process = start_keysync(args, cli.cwd, cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    progress = []
    for line in process.stderr:  # off a terminal: one line per finished action
        progress.append(line)
        if "replaced" in line:
            stop_bao(bao)
            break
    stdout, rest = process.communicate(timeout=60)
    run = Run(args, process.wait(), stdout, "".join(progress) + rest)
    CAPTURED.append(run.stdout + run.stderr)
    return run


# --- the directory removed mid-apply -------------------------------------------------------------


def test_the_sink_directory_removed_mid_apply_fails_the_apply_and_the_next_one_heals(
    tmp_path: Path, slow_server: DevServer
) -> None:
    names = [f"dir-{i:02d}" for i in range(8)]
    cli = Cli(tmp_path, base_env() | {"CODER_URL": slow_server.url, "CODER_SESSION_TOKEN": OWNER_TOKEN})
    cli.write_manifest(manifest(names, SINKS["directory"]))
    args = ["apply", "--auto-approve", "--parallelism", "1"]
    process = start_keysync(
        args, tmp_path, cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "created" in line:
            # Moved away in one step, then removed: keysync may be creating a file in it meanwhile.
            (tmp_path / "keys").rename(tmp_path / "removed")
            shutil.rmtree(tmp_path / "removed")
            break
    stdout, rest = process.communicate(timeout=60)
    run = Run(args, process.wait(), stdout, "".join(seen) + rest)
    CAPTURED.append(stdout + run.stderr)

    assert run.code == 1, run
    assert "Apply complete" not in run.stdout
    assert "was removed or replaced while keysync wrote to it" in one_error_line(run)
    assert not (tmp_path / "keys").exists(), "keysync made the removed directory again"

    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan
    assert {a["name"] for a in json.loads(plan.stdout)["actions"]} == set(names)
    healed = cli("apply", "--auto-approve")
    assert healed.code == 0, healed
    assert sorted(assert_every_live_key_is_held(tmp_path, "directory", slow_server)) == names


# --- symlinks and files keysync did not write ----------------------------------------------------


def test_a_symlink_planted_as_the_lock_is_refused_and_its_target_kept(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest(manifest(["locked"], SINKS["file"]))
    victim = cli.cwd / "victim.txt"
    victim.write_text("precious\n")
    (cli.cwd / "secrets").mkdir()
    (cli.cwd / "secrets" / "keys.json.lock").symlink_to(victim)

    run = cli("apply", "--auto-approve")

    assert run.code == 1, run
    error = one_error_line(run)
    assert "keys.json.lock is a symbolic link" in error
    assert victim.read_text() == "precious\n"
    assert live_keys(dev_server) == {}


def test_the_directory_sink_refuses_files_it_did_not_write_and_does_the_rest(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest(manifest(["own-a", "theirs", "linked", "own-b"], SINKS["directory"]))
    directory = cli.cwd / "keys"
    directory.mkdir(mode=0o700)
    victim = cli.cwd / "victim.txt"
    victim.write_text("someone else's")
    (directory / "theirs").write_text("someone else's")
    (directory / "linked").symlink_to(victim)

    run = cli("apply", "--auto-approve", "--format", "json")

    assert run.code == 1, run
    one_error_line(run)
    errors = {a["name"]: a["error"] for a in json.loads(run.stdout)["actions"] if a["result"] == "failed"}
    assert sorted(errors) == ["linked", "theirs"]
    for name, error in errors.items():
        assert f"{directory / name} exists and keysync did not write it" in error, error
    assert (directory / "theirs").read_text() == victim.read_text() == "someone else's"
    assert (directory / "linked").is_symlink()
    assert sorted(live_keys(dev_server)) == ["own-a", "own-b"], "a refused key was created anyway"
    assert sorted(held_secrets(cli.cwd, "directory")) == ["own-a", "own-b"]

    # Once the files are moved aside, those keys are made like any other.
    for name in errors:
        (directory / name).rename(cli.cwd / f"{name}.moved")
    assert cli("apply", "--auto-approve").code == 0
    held = assert_every_live_key_is_held(cli.cwd, "directory", dev_server)
    assert sorted(held) == ["linked", "own-a", "own-b", "theirs"]


def test_a_symlinked_sink_file_is_written_through_to_its_target(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(manifest(["linked"], "sink:\n  type: file\n  path: run/keys.json\n"))
    (cli.cwd / "store").mkdir(mode=0o700)
    (cli.cwd / "run").mkdir(mode=0o700)
    link = cli.cwd / "run" / "keys.json"
    link.symlink_to(cli.cwd / "store" / "keys.json")

    assert cli("apply", "--auto-approve").code == 0
    assert link.is_symlink(), "the link was replaced by a file: whoever reads its target reads stale keys"
    target = cli.cwd / "store" / "keys.json"
    assert target.stat().st_mode & 0o777 == 0o600
    record = json.loads(target.read_text())["keys"]["linked"]
    assert record["key_prefix"] == live_keys(dev_server)["linked"]["key_prefix"] == record["key"][:11]

    again = cli("apply", "--auto-approve", "--replace", "linked")
    assert again.code == 0, again
    assert link.is_symlink()
    assert (
        json.loads(target.read_text())["keys"]["linked"]["key"][:11]
        == live_keys(dev_server)["linked"]["key_prefix"]
    )


# --- a watch that runs for months ------------------------------------------------------------------


def test_watch_rounds_that_write_leave_no_thread_and_no_record_behind(
    tmp_path: Path, dev_server: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round opens its own sink; closing it ends its flusher thread and lets its records go."""
    monkeypatch.setenv("CODER_SESSION_TOKEN", OWNER_TOKEN)
    before = client_threads()  # other tests' sinks, never closed, may have left flushers behind
    for sink_type in ("file", "directory"):
        path = tmp_path / f"{sink_type}.yaml"
        path.write_text(manifest(["soak-a", "soak-b"], SINKS[sink_type]))
        watcher = Watcher(
            _sessions(Options(manifest=path, url=dev_server.url)),
            WatchSettings(interval=3600, apply=True),
            EventLog("json", io.StringIO()),
            None,
            threading.Event(),
        )
        assert watcher.round()
        threads = client_threads()
        for _ in range(8):  # every round heals a key deleted out of band: every round writes
            delete_out_of_band(dev_server, live_keys(dev_server)["soak-a"]["id"])
            assert watcher.round()
            assert client_threads() == threads
        assert sorted(held_secrets(tmp_path, sink_type)) == ["soak-a", "soak-b"]
        assert threads == before
        gc.collect()
        ours = [o for o in gc.get_objects() if isinstance(o, SecretRecord) and o.coderd_url == dev_server.url]
        assert not ours, "a round's records outlived it"
        for name in ("soak-a", "soak-b"):
            delete_out_of_band(dev_server, live_keys(dev_server)[name]["id"])


def client_threads() -> list[str]:
    """This process's threads, less the dev server's (it serves each connection in a thread)."""
    server = ("keysync-devserver", "(process_request_thread)")
    return sorted(t.name for t in threading.enumerate() if not t.name.endswith(server))


def _sessions(options: Options) -> Callable[[], Session]:
    return lambda: Session(options)
