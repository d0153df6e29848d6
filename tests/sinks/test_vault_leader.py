"""`keysync watch --leader-elect` with a vault sink, against a real OpenBao dev server: the KV lock
held across rounds by one replica of two (installed-CLI processes), a standby taking over after
SIGTERM (the entry released) and after SIGKILL (the entry expired), expiry judged by watching the
entry rather than by anyone's wall clock, and a leader whose renewals fail stepping down before
its lease could expire for anyone."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from leaders import healthy, leading, the_leader
from vaultfixtures import lock_entry, manifest, prefix, vault_cli
from watching import Watch, Watches, watches

from keysync.devserver import DevServer
from keysync.engine.leadership import Leadership
from keysync.engine.session import Options, Session
from keysync.engine.watch import EventLog
from keysync.manifest.sinks import VaultSinkConfig
from keysync.sinks.base import SinkContext
from keysync.sinks.vault import VaultSink
from keysync.sinks.vault_leader import VaultLeaderLock
from keysync.sinks.vault_lock import VaultLock

from baoserver import Bao, bao_fixture
from coderlive import delete_out_of_band, live_keys
from conftest import Cli
from quietserver import QuietServer

__all__ = ["bao_fixture", "prefix", "vault_cli", "watches"]  # fixtures: pytest finds them here
FLAGS = ("--apply", "--leader-elect", "--lease-duration", "2s", "--log-format", "json")


def replicas(vault_cli: Cli, watches: Watches, prefix: str, count: int) -> list[Watch]:
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))
    return [watches.start(vault_cli.cwd, vault_cli.env, *FLAGS) for _ in range(count)]


def stored_prefix(bao: Bao, prefix: str, name: str) -> str:
    response = bao.api("GET", f"secret/data/{prefix}/{name}")
    return str(response.json()["data"]["data"]["key"][:11]) if response.status_code == 200 else ""


def test_of_two_replicas_exactly_one_reconciles(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer, watches: Watches
) -> None:
    group = replicas(vault_cli, watches, prefix, 2)
    leader = the_leader(group)
    leader.until(lambda: all(stored_prefix(bao, prefix, name) for name in ("alpha", "beta")), "both keys")
    [standby] = [w for w in group if w is not leader]

    for watch in group:
        watch.until(partial(healthy, watch), "/healthz 200 on both replicas")
    assert leader.metrics().get("keysync_leader") == 1.0
    assert standby.metrics().get("keysync_leader") == 0.0
    assert not standby.events("action")
    created = [e for e in leader.events("action") if e["action"] == "create"]
    assert sorted((e["name"], e["result"]) for e in created) == [("alpha", "ok"), ("beta", "ok")]
    live = live_keys(dev_server)
    assert {name: stored_prefix(bao, prefix, name) for name in live} == {
        name: key["key_prefix"] for name, key in live.items()
    }
    assert standby.events("leadership")[-1]["holder"].startswith(f"{leader.process.pid}@")
    assert bao.root_token not in leader.log() + standby.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_standby_takes_over_when_the_leader_goes(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer, watches: Watches, signum: signal.Signals
) -> None:
    group = replicas(vault_cli, watches, prefix, 2)
    leader = the_leader(group)
    leader.until(lambda: len(live_keys(dev_server)) == 2, "both keys")
    [standby] = [w for w in group if w is not leader]

    leader.stop(signum)
    released = any(e["state"] == "released" for e in leader.events("leadership"))
    standby.until(lambda: leading(standby), "the standby to lead")
    delete_out_of_band(dev_server, live_keys(dev_server)["alpha"]["id"])
    standby.until(
        lambda: (
            "alpha" in live_keys(dev_server) and any(e["name"] == "alpha" for e in standby.events("action"))
        ),
        "the new leader to heal alpha",
    )

    assert released is (signum == signal.SIGTERM)
    assert stored_prefix(bao, prefix, "alpha") == live_keys(dev_server)["alpha"]["key_prefix"]
    assert lock_entry(bao, prefix)["pid"] == standby.process.pid


def test_expiry_is_judged_by_watching_the_entry_not_by_the_holders_clock(
    bao: Bao, prefix: str, dev_server: DevServer, tmp_path: Path
) -> None:
    config = VaultSinkConfig.model_validate({"type": "vault", "path": f"{prefix}/{{name}}"})
    env = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.root_token}
    sink = VaultSink(config, SinkContext(tmp_path, dev_server.url, env, timeout=5))
    path = f"secret/data/{prefix}/.keysync-lock"
    later = [0.0]  # how far this candidate's clock has been moved on
    candidate = VaultLeaderLock(
        VaultLock(sink._api, path, 2.0), 2.0, lambda: None, clock=lambda: time.monotonic() + later[0]
    )
    holder = {"owner": "x", "pid": 4242, "host": "elsewhere", "since": "2026-01-01T00:00:00+00:00"}

    def holder_writes(expires_at: float) -> None:
        bao.ok("POST", path, {"data": {**holder, "expires_at": expires_at, "lease_s": 2}})

    try:
        holder_writes(1.0)  # long past by this host's clock: the holder's clock runs behind
        seen_first = candidate.try_hold()
        later[0] += 1.9
        before_its_lease = candidate.try_hold()
        holder_writes(4e9)  # it renews, its clock now far ahead
        later[0] += 1.0
        after_a_renewal = candidate.try_hold()
        later[0] += 1.9
        within_the_renewed_lease = candidate.try_hold()
        later[0] += 0.2
        taken = candidate.try_hold()
        entry = lock_entry(bao, prefix)
        candidate.release()
    finally:
        sink.close()

    assert [seen_first, before_its_lease, after_a_renewal, within_the_renewed_lease] == [False] * 4
    assert candidate.holder() == "nobody"
    assert taken and entry["pid"] == os.getpid() and entry["lease_s"] == 2.0
    assert lock_entry(bao, prefix)["released"] is True


def test_a_leader_whose_renewals_fail_steps_down_before_its_lease_expires(
    bao: Bao, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bao.token("root")
    monkeypatch.setenv("VAULT_ADDR", bao.address)
    monkeypatch.setenv("VAULT_TOKEN", token)
    (tmp_path / "keysync.yaml").write_text(manifest(prefix, ["alpha"]))
    session = Session(Options(manifest=tmp_path / "keysync.yaml", url="http://127.0.0.1:7080"))
    stream = io.StringIO()
    leadership = Leadership(session, 3.0, EventLog("json", stream), None, None)
    stopped: list[float] = []
    leadership.on_lost = lambda: stopped.append(time.time())
    try:
        assert leadership.leading()
        bao.ok("POST", "auth/token/revoke", {"token": token})  # every renewal is refused from now on
        assert leadership.lost.wait(6)

        assert stopped[0] < lock_entry(bao, prefix)["expires_at"]  # before anyone could take over
        assert leadership.lost.is_set() and not leadership.leading()
        states = [json.loads(line)["state"] for line in stream.getvalue().splitlines()]
        assert states == ["leader", "error", "standby"]
        assert token not in stream.getvalue()
    finally:
        leadership.release()


def test_an_apply_while_a_watch_leads_fails_at_once_naming_the_leader(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer, tmp_path: Path
) -> None:
    config = VaultSinkConfig.model_validate({"type": "vault", "path": f"{prefix}/{{name}}"})
    env = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.root_token}
    sink = VaultSink(config, SinkContext(tmp_path, dev_server.url, env, timeout=5))
    leader = sink.leader_lock(15.0, lambda: None)
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))
    try:
        assert leader.try_hold()
        run = vault_cli("apply", "--auto-approve")
    finally:
        leader.release()
        sink.close()

    assert run.code == 1, run
    assert f"is held by process {os.getpid()} on " in run.stderr
    assert live_keys(dev_server) == {}


class StallingVault:
    """A relay to the dev server that, once `stall` is set, holds every request until `go` is."""

    def __init__(self, bao: Bao) -> None:
        self.stall, self.go = threading.Event(), threading.Event()
        self.held = 0
        upstream = urlsplit(bao.address)
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if relay.stall.is_set():
                    relay.held += 1
                    relay.go.wait(10)
                connection = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=10)
                connection.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self._httpd.server_port}"
        self._httpd.serve_in_background()

    def stop(self) -> None:
        self.go.set()
        self._httpd.stop()


@pytest.fixture
def stalling(bao: Bao) -> Iterator[StallingVault]:
    relay = StallingVault(bao)
    yield relay
    relay.stop()


def test_a_leader_whose_renewal_hangs_steps_down_before_its_lease_expires(
    bao: Bao, prefix: str, stalling: StallingVault, dev_server: DevServer, tmp_path: Path
) -> None:
    config = VaultSinkConfig.model_validate({"type": "vault", "path": f"{prefix}/{{name}}"})
    env = {"VAULT_ADDR": stalling.address, "VAULT_TOKEN": bao.root_token}
    sink = VaultSink(config, SinkContext(tmp_path, dev_server.url, env, timeout=30))
    stopped: list[float] = []
    leader = sink.leader_lock(3.0, lambda: stopped.append(time.time()))
    try:
        assert leader.try_hold()
        written = lock_entry(bao, prefix)
        stalling.stall.set()  # the next renewal waits far beyond the lease for an answer
        until_lost = time.monotonic() + 6
        while not stopped and time.monotonic() < until_lost:
            time.sleep(0.05)
        held_meanwhile = stalling.held
    finally:
        stalling.go.set()
        leader.release()
        sink.close()

    assert stopped, "the leader never stepped down"
    assert held_meanwhile >= 1, "no renewal was stuck when the leader stepped down"
    assert stopped[0] < written["expires_at"]  # before anyone could take over
    assert lock_entry(bao, prefix)["released"] is True  # the late renewal landed, then the release


def test_leader_election_with_a_local_sink_is_a_one_line_usage_error(cli: Cli) -> None:
    cli.write_manifest("version: 1\nsink:\n  type: file\n  path: s.json\nkeys: []\n")

    run = cli("watch", "--leader-elect", "--interval", "1s")
    helped = cli("watch", "--help")

    assert run.code == 1, run
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "--leader-elect needs a sink whose lock replicas on several hosts share (kubernetes, vault)" in (
        run.stderr
    )
    options = helped.stdout.split("Options:", 1)[1]
    option = " ".join(options.split("--leader-elect", 1)[1].split("--lease-duration")[0].split())
    assert "kubernetes (a Lease) and vault (its KV lock)" in option
