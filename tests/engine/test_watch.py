"""`keysync watch` end to end: the installed keysync as a subprocess against the dev server.

Each test judges what an operator sees: the JSON log lines on stderr, /metrics (parsed with
prometheus_client's own parser), /healthz, the keys Coder lists, the sink file, the audit trail
and the exit code after a signal. Waits poll with a deadline; no assertion is about timing, except
the one lower bound that makes backoff observable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from watching import DEADLINE, Metrics, Watches, sink_records, watches, write_atomically

import keysync
from keysync.devserver import DevServer, DevServerConfig
from keysync.engine.session import Session
from keysync.engine.watch import EventLog, Watcher, WatchSettings

from conftest import KEYSYNC, OWNER_TOKEN, Cli
from replica import IN, gateway_status

__all__ = ["watches"]  # a fixture: pytest finds it here

COLLECTION = "/api/v2/ai-gateway/keys"  # the generation current Coder serves, as every server here
KEY_STATES = ("in_sync", "missing", "secret_missing", "secret_stale", "rotation_due", "waiting")


# Coder seen from outside, by URL, so that it works for in-process and subprocess dev servers.


def live_keys(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(url + COLLECTION, headers={"Coder-Session-Token": OWNER_TOKEN}, trust_env=False)
    assert response.status_code == 200, response.text
    return {key["name"]: key for key in response.json()}


def create_out_of_band(url: str, name: str) -> dict[str, Any]:
    response = httpx.post(
        url + COLLECTION, headers={"Coder-Session-Token": OWNER_TOKEN}, json={"name": name}, trust_env=False
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def delete_out_of_band(url: str, key_id: str) -> None:
    response = httpx.delete(
        f"{url}{COLLECTION}/{key_id}", headers={"Coder-Session-Token": OWNER_TOKEN}, trust_env=False
    )
    assert response.status_code in (200, 204), response.text


def gateway_accepts(url: str, secret: str) -> bool:
    return gateway_status(url, secret) == IN


def assert_nothing_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in [OWNER_TOKEN, *secrets]:
            assert secret not in text


# Healing, metrics, audit and a clean SIGTERM


def test_watch_apply_heals_a_key_deleted_out_of_band(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    names = {"gateway-us-east", "gateway-eu-west"}
    manifest = cli.write_manifest("version: 1\nkeys:\n  - gateway-us-east\n  - gateway-eu-west\n")
    watch = watches.start(cli.cwd, cli.env, "--apply", "--audit-log", "audit.jsonl")

    first = watch.until(
        lambda: keys if set(keys := live_keys(dev_server.url)) == names else None, "both keys"
    )
    watch.until(lambda: watch.healthz() == 200, "/healthz 200")
    old_secret = sink_records(cli.cwd)["gateway-us-east"]["key"]
    delete_out_of_band(dev_server.url, first["gateway-us-east"]["id"])

    def healed() -> dict[str, Any] | None:
        key = live_keys(dev_server.url).get("gateway-us-east")
        record = sink_records(cli.cwd).get("gateway-us-east")
        if key and record and key["id"] != first["gateway-us-east"]["id"] and record["id"] == key["id"]:
            return key
        return None

    new_key = watch.until(healed, "gateway-us-east to be created again")
    new_secret = sink_records(cli.cwd)["gateway-us-east"]["key"]
    assert new_secret[:11] == new_key["key_prefix"]
    assert gateway_accepts(dev_server.url, new_secret)
    assert not gateway_accepts(dev_server.url, old_secret)
    assert live_keys(dev_server.url)["gateway-eu-west"]["id"] == first["gateway-eu-west"]["id"]

    # The round that found the key missing created it: no round planned a change it did not apply.
    for event in watch.events("round"):
        assert event["result"] == "success"
        if any(event["pending"].values()):
            assert {k: event["applied"][k] for k in event["pending"]} == event["pending"], event
    heal = [e for e in watch.events("action") if e["id"] == new_key["id"]]
    assert len(heal) == 1
    assert {e["keysync_version"] for e in watch.events()} == {keysync.__version__}  # every line
    assert heal[0] | {"time": ""} == {
        "time": "",
        "event": "action",
        "keysync_version": keysync.__version__,
        "action": "create",
        "name": "gateway-us-east",
        "reason": "missing",
        "result": "ok",
        "id": new_key["id"],
        "key_prefix": new_key["key_prefix"],
    }

    def settled() -> Metrics | None:
        metrics = watch.metrics()
        return metrics if metrics.get("keysync_keys", state="in_sync") == 2 else None

    metrics = watch.until(settled, "keys in sync again in /metrics")
    assert metrics.get("keysync_applied_actions_total", action="create", result="ok") == 3
    for action in ("create", "delete", "replace"):
        assert metrics.get("keysync_pending_actions", action=action) == 0
    for state in KEY_STATES[1:]:
        assert metrics.get("keysync_keys", state=state) == 0
    successes = metrics.get("keysync_rounds_total", result="success")
    assert successes and successes >= 2
    assert metrics.get("keysync_round_duration_seconds_count") == successes
    last_success = metrics.get("keysync_last_success_timestamp_seconds")
    assert last_success and last_success > time.time() - 3600

    audit = [json.loads(line) for line in (cli.cwd / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == 3
    assert sorted((a["action"], a["name"], a["result"]) for a in audit[:2]) == [
        ("create", name, "ok") for name in sorted(names)
    ]
    healed_line = {k: audit[2][k] for k in ("action", "name", "reason", "id", "key_prefix")}
    assert healed_line == {
        "action": "create",
        "name": "gateway-us-east",
        "reason": "missing",
        "id": new_key["id"],
        "key_prefix": new_key["key_prefix"],
    }
    assert {a["manifest_sha256"] for a in audit} == {hashlib.sha256(manifest.read_bytes()).hexdigest()}

    assert watch.stop(signal.SIGTERM) == 0
    assert watch.events()[-1]["event"] == "stop"
    assert_nothing_secret(
        [watch.log(), metrics.text, (cli.cwd / "audit.jsonl").read_text()], [old_secret, new_secret]
    )


# Without --apply: drift shows in /metrics, nothing changes; SIGINT exits 130


def test_watch_without_apply_reports_drift_and_changes_nothing(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, bravo]\n")
    assert cli("apply", "--auto-approve").code == 0
    charlie = create_out_of_band(dev_server.url, "charlie")  # listed, but the sink lacks its secret
    stray = create_out_of_band(dev_server.url, "stray")  # not listed
    delete_out_of_band(dev_server.url, live_keys(dev_server.url)["bravo"]["id"])
    cli.write_manifest("version: 1\nkeys: [alpha, bravo, charlie]\n")
    before = live_keys(dev_server.url)
    watch = watches.start(cli.cwd, cli.env)

    watch.until(lambda: watch.successes() >= 1, "a round")
    metrics = watch.metrics()
    pending = {a: metrics.get("keysync_pending_actions", action=a) for a in ("create", "delete", "replace")}
    assert pending == {"create": 1, "delete": 1, "replace": 1}
    states = {s: metrics.get("keysync_keys", state=s) for s in KEY_STATES}
    assert states == {
        "in_sync": 1,
        "missing": 1,
        "secret_missing": 1,
        "secret_stale": 0,
        "rotation_due": 0,
        "waiting": 0,
    }
    assert watch.healthz() == 200
    assert live_keys(dev_server.url) == before
    assert watch.events("action") == []
    assert all(
        e["pending"] == {"create": 1, "delete": 1, "replace": 1, "rotate": 0, "retire": 0}
        for e in watch.events("round")
    )
    assert metrics.get("keysync_rounds_total", result="failure") in (None, 0)

    assert watch.stop(signal.SIGINT) == 130
    last = watch.events()[-1]
    assert (last["event"], last["signal"]) == ("stop", "SIGINT")
    assert_nothing_secret([watch.log(), metrics.text], [charlie["key"], stray["key"]])


# A plan that needs --force: the guarded action is skipped and said so, the rest is applied


def test_watch_skips_what_needs_force_and_stays_healthy(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("apply", "--auto-approve").code == 0
    stray = create_out_of_band(dev_server.url, "stray")
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 0\nkeys: [alpha, bravo]\n")
    watch = watches.start(cli.cwd, cli.env, "--apply")

    watch.until(lambda: "bravo" in sink_records(cli.cwd), "bravo, which needs no force, to be created")
    watch.until(lambda: watch.successes() >= 1, "the round to end")
    skipped = watch.events("skipped")
    assert skipped, watch.log()
    assert {(e["action"], e["name"], e["needs"]) for e in skipped} == {("delete", "stray", "--force")}
    reason = skipped[-1]["reason"]
    assert "max_deletes" in reason
    metrics = watch.metrics()
    # The label is a fixed code: no key names or counts in a metric's labels.
    assert metrics.get("keysync_skipped_actions", action="delete", reason="max-deletes") == 1
    assert metrics.get("keysync_pending_actions", action="delete") == 1
    assert metrics.get("keysync_rounds_total", result="failure") in (None, 0)
    assert live_keys(dev_server.url)["stray"]["id"] == stray["id"]
    assert watch.healthz() == 200
    assert [e["name"] for e in watch.events("action")] == ["bravo"]
    assert watch.stop(signal.SIGTERM) == 0


def test_skipped_actions_clear_once_nothing_is_held_back(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 0\nkeys: [alpha]\n")
    assert cli("apply", "--auto-approve").code == 0
    stray = create_out_of_band(dev_server.url, "stray")
    watch = watches.start(cli.cwd, cli.env, "--apply")
    watch.until(lambda: watch.events("skipped") and watch.successes() >= 1, "a round that skips")

    def held() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        samples = watch.metrics().samples.items()
        return {k: v for k, v in samples if k[0] == "keysync_skipped_actions" and v}

    assert len(held()) == 1
    delete_out_of_band(dev_server.url, stray["id"])  # gone by other hands: nothing is held back now
    watch.until(lambda: watch.metrics().get("keysync_pending_actions", action="delete") == 0, "no delete")
    rounds = watch.successes()
    watch.until(lambda: watch.successes() > rounds, "a whole round with nothing to delete")
    assert held() == {}
    assert watch.stop(signal.SIGTERM) == 0


# The manifest is read again every round


def test_watch_rereads_an_edited_manifest(cli: Cli, dev_server: DevServer, watches: Watches) -> None:
    manifest = cli.write_manifest("version: 1\nkeys: [alpha]\n")
    shas = [hashlib.sha256(manifest.read_bytes()).hexdigest()]
    watch = watches.start(cli.cwd, cli.env, "--apply", "--audit-log", "audit.jsonl", listen=False)
    watch.until(lambda: set(sink_records(cli.cwd)) == {"alpha"}, "alpha")

    write_atomically(manifest, "version: 1\nkeys: [alpha, bravo]\n")
    shas.append(hashlib.sha256(manifest.read_bytes()).hexdigest())
    watch.until(lambda: set(sink_records(cli.cwd)) == {"alpha", "bravo"}, "bravo, added to the manifest")

    write_atomically(manifest, "version: 1\nkeys: [bravo]\n")
    shas.append(hashlib.sha256(manifest.read_bytes()).hexdigest())
    watch.until(lambda: set(sink_records(cli.cwd)) == {"bravo"}, "alpha, removed from the manifest")
    assert set(live_keys(dev_server.url)) == {"bravo"}

    # A broken edit fails the rounds and touches nothing; the next good edit is applied.
    write_atomically(manifest, "version: 1\nkeys: [bravo, charlie\n")
    failed = watch.until(lambda: [e for e in watch.events("round") if e["result"] == "failure"], "a failure")
    assert "keysync.yaml" in failed[0]["error"]
    assert set(live_keys(dev_server.url)) == {"bravo"}
    write_atomically(manifest, "version: 1\nkeys: [bravo, charlie]\n")
    shas.append(hashlib.sha256(manifest.read_bytes()).hexdigest())
    watch.until(lambda: set(sink_records(cli.cwd)) == {"bravo", "charlie"}, "charlie, after the fix")
    # The round that applied charlie logs its line once its actions are done.
    watch.until(lambda: watch.events("round")[-1]["result"] == "success", "a successful round")

    audit = [json.loads(line) for line in (cli.cwd / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["name"], a["manifest_sha256"]) for a in audit] == [
        ("create", "alpha", shas[0]),
        ("create", "bravo", shas[1]),
        ("delete", "alpha", shas[2]),
        ("create", "charlie", shas[3]),
    ]
    assert watch.stop(signal.SIGTERM) == 0


# The server goes away and comes back


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=DEADLINE)
            if server.process.stdout is not None:
                server.process.stdout.close()


def start_server(started: list[ServerProcess], state: Path, port: int = 0) -> ServerProcess:
    argv = [KEYSYNC, "dev-server", "--port", str(port), "--token", OWNER_TOKEN, "--api", "ai-gateway-keys"]
    argv += ["--state", str(state)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server = ServerProcess(process, "")
    started.append(server)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on http://"), line
    server.url = line.removeprefix("listening on ").strip()
    return server


def test_watch_backs_off_while_the_server_is_away_and_recovers(
    tmp_path: Path, watches: Watches, server_processes: list[ServerProcess]
) -> None:
    state = tmp_path / "devserver-state.json"
    server = start_server(server_processes, state)
    port = int(server.url.rsplit(":", 1)[1])
    (tmp_path / "keysync.yaml").write_text("version: 1\nkeys: [alpha]\n")
    env = {"PATH": os.environ["PATH"], "CODER_URL": server.url, "CODER_SESSION_TOKEN": OWNER_TOKEN}
    watch = watches.start(tmp_path, env, "--apply")
    watch.until(lambda: watch.successes() >= 1 and sink_records(tmp_path), "a first successful round")
    alpha = live_keys(server.url)["alpha"]

    assert server.stop() == 0
    watch.until(lambda: watch.failures() >= 1, "a failed round while the server is away")
    watch.until(lambda: watch.healthz() == 503, "/healthz 503 after 3 intervals without success")
    failed = watch.events("round")[-1]
    assert failed["result"] == "failure"
    assert failed["error"]

    successes = watch.successes()
    server = start_server(server_processes, state, port)
    watch.until(lambda: watch.successes() > successes, "a successful round after the server is back")
    watch.until(lambda: watch.healthz() == 200, "/healthz 200 again")
    assert live_keys(server.url)["alpha"]["id"] == alpha["id"]
    assert sink_records(tmp_path)["alpha"]["id"] == alpha["id"]
    assert [e["name"] for e in watch.events("action")] == ["alpha"]

    assert watch.stop(signal.SIGTERM) == 0
    assert_nothing_secret([watch.log()], [sink_records(tmp_path)["alpha"]["key"]])


def test_a_failed_round_is_retried_after_5s_not_after_the_interval(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    wrong_token = "WrongToken-0123456789abcdefghijkl"  # a 401 is not retried: the round fails at once
    watch = watches.start(cli.cwd, cli.env | {"CODER_SESSION_TOKEN": wrong_token}, interval="1h")
    assert watch.healthz() == 503  # no round has succeeded yet

    rounds = watch.until(lambda: r if len(r := watch.events("round")) >= 2 else None, "a second round")
    assert [r["result"] for r in rounds] == ["failure", "failure"]
    first_end = datetime.fromisoformat(rounds[0]["time"])
    second_start = datetime.fromisoformat(rounds[1]["time"]).timestamp() - rounds[1]["duration_s"]
    assert second_start - first_end.timestamp() >= 4.9  # log times are rounded to milliseconds
    assert watch.healthz() == 503
    assert watch.failures() == 2
    assert watch.stop(signal.SIGTERM) == 0
    assert_nothing_secret([watch.log()], [wrong_token])


class _RecordingStop(threading.Event):
    """Records each wait the watcher asks for and stops it after a number of rounds."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self._rounds = rounds

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self._rounds:
            self.set()
        return self.is_set()


def _no_session() -> Session:
    raise AssertionError("a scripted round opens no session")


class _ScriptedWatcher(Watcher):
    def __init__(self, results: list[bool], stop: threading.Event) -> None:
        settings = WatchSettings(interval=30.0, apply=False)
        super().__init__(_no_session, settings, EventLog("json", io.StringIO()), None, stop)
        self._results = iter(results)

    def round(self) -> bool:
        return next(self._results)


def test_backoff_starts_at_5s_doubles_up_to_the_interval_and_resets_on_success() -> None:
    results = [False, False, False, False, True, False]
    stop = _RecordingStop(len(results))
    _ScriptedWatcher(results, stop).run()
    assert stop.waits == [5.0, 10.0, 20.0, 30.0, 30.0, 5.0]


# Signals: the round in flight is finished, then the watcher exits 0 (SIGTERM) or 130 (SIGINT)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_mid_round_finishes_the_round_then_exits(
    tmp_path: Path, watches: Watches, signum: int, code: int
) -> None:
    config = DevServerConfig(port=0, token=OWNER_TOKEN, latency_ms=300)
    with DevServer(config) as slow:
        (tmp_path / "keysync.yaml").write_text("version: 1\nkeys: [k1, k2, k3, k4]\n")
        env = {"PATH": os.environ["PATH"], "CODER_URL": slow.url, "CODER_SESSION_TOKEN": OWNER_TOKEN}
        watch = watches.start(tmp_path, env, "--apply", "--parallelism", "1", listen=False)
        watch.until(lambda: watch.events("action"), "the first action")

        assert watch.stop(signum) == code
        events = watch.events()
        assert [e["event"] for e in events[-2:]] == ["round", "stop"]
        assert len(watch.events("round")) == 1
        assert events[-1]["signal"] == signal.Signals(signum).name
        assert all(e["result"] == "ok" for e in watch.events("action"))
        live = live_keys(slow.url)
        records = sink_records(tmp_path)
        assert live
        assert {name: key["id"] for name, key in live.items()} == {n: r["id"] for n, r in records.items()}


# Log format text, and an audit log that cannot be written


def test_log_format_text_writes_plain_lines(cli: Cli, dev_server: DevServer, watches: Watches) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    watch = watches.start(cli.cwd, cli.env, "--log-format", "text", listen=False, text_log=True)
    watch.until(lambda: " round result=success " in watch.log(), "a text round line")
    assert watch.stop(signal.SIGTERM) == 0
    lines = watch.log().splitlines()
    assert lines
    for line in lines:
        assert not line.startswith("{")
        stamp, event, *_ = line.split(" ")
        datetime.fromisoformat(stamp)
        assert event in ("start", "round", "stop")


def test_an_unwritable_audit_log_fails_the_round_before_any_action(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    (cli.cwd / "blocker").write_text("a regular file, so nothing can be created under it\n")
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    watch = watches.start(cli.cwd, cli.env, "--apply", "--audit-log", "blocker/audit.jsonl")

    watch.until(lambda: watch.failures() >= 1, "a failed round")
    failed = watch.events("round")[0]
    assert failed["result"] == "failure"
    assert "audit" in failed["error"]
    assert live_keys(dev_server.url) == {}
    assert watch.events("action") == []
    assert watch.healthz() == 503
    assert watch.stop(signal.SIGTERM) == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make writes fail")
def test_a_failed_audit_write_fails_the_watch_and_keeps_what_was_done(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, bravo, charlie]\n")
    watch = watches.start(
        cli.cwd, cli.env, "--apply", "--parallelism", "1", "--audit-log", "/dev/full", interval="1h"
    )

    code = watch.process.wait(timeout=DEADLINE)  # a watcher that cannot audit must not go on

    assert code == 1, watch.log()
    failed = [e for e in watch.events("round") if e["result"] == "failure"]
    assert failed, watch.log()
    assert "audit" in failed[0]["error"]
    live = live_keys(dev_server.url)
    records = sink_records(cli.cwd)
    assert live, "what was done before the audit write failed is kept"
    assert {name: key["id"] for name, key in live.items()} == {n: r["id"] for n, r in records.items()}


# Options


def test_listen_on_a_port_in_use_is_an_error(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = cli("watch", "--interval", "1s", "--listen", f"127.0.0.1:{port}", timeout=DEADLINE)
    assert run.code == 1, run
    assert "--listen" in run.stderr
    assert "Traceback" not in run.stderr
    assert live_keys(dev_server.url) == {}


def test_watch_has_no_force(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    run = cli("watch", "--interval", "1s", "--apply", "--force", timeout=DEADLINE)
    assert run.code == 1, run
    assert live_keys(dev_server.url) == {}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_watch_round_refuses_a_sink_git_would_commit_as_apply_does(
    cli: Cli, dev_server: DevServer, watches: Watches
) -> None:
    git = shutil.which("git")
    assert git is not None
    subprocess.run([git, "init", "-q", str(cli.cwd)], check=True, capture_output=True)
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    watch = watches.start(cli.cwd, cli.env, "--apply")

    watch.until(lambda: watch.failures() >= 1, "a failed round")
    (round_, *_) = watch.events("round")
    assert round_["result"] == "failure" and ".gitignore" in round_["error"], round_
    assert live_keys(dev_server.url) == {}
    assert not (cli.cwd / "secrets").exists()  # not even the lock file was made in the work tree

    (cli.cwd / ".gitignore").write_text("/secrets/\n")
    watch.until(lambda: "alpha" in sink_records(cli.cwd), "alpha, once git ignores the sink")
    assert watch.stop(signal.SIGTERM) == 0
