"""`keysync watch --leader-elect` with a kubernetes sink: several installed-CLI replicas, one
Lease, exactly one of them reconciling; a standby takes over after SIGTERM (the Lease released)
and after SIGKILL (the Lease expired); no key is created twice."""

from __future__ import annotations

import io
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from leaders import healthy, leading, the_leader
from watching import Watch, Watches, watches

from keysync.devserver import DevServer
from keysync.engine.leadership import Leadership
from keysync.engine.session import Options, Session
from keysync.engine.watch import EventLog

from coderlive import delete_out_of_band, live_keys
from conftest import Cli
from kubeemu import KubeEmu
from kubeemu.status import StatusError
from kubefixtures import NS, emu_fixture, renewals_fail_fast_then_hang

__all__ = ["emu_fixture", "watches"]
FLAGS = ("--apply", "--leader-elect", "--lease-duration", "2s", "--log-format", "json")


@pytest.fixture
def kube(cli: Cli, emu: KubeEmu, tmp_path: Path) -> Cli:
    cli.env["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    cli.write_manifest('version: 1\nsink:\n  type: kubernetes\nkeys: ["alpha", "beta"]\n')
    return cli


def replicas(kube: Cli, watches: Watches, count: int, audit: Path | None = None) -> list[Watch]:
    extra = ("--audit-log", str(audit)) if audit else ()
    return [watches.start(kube.cwd, kube.env, *FLAGS, *extra) for _ in range(count)]


def test_of_three_replicas_exactly_one_reconciles(
    kube: Cli, emu: KubeEmu, dev_server: DevServer, watches: Watches, tmp_path: Path
) -> None:
    group = replicas(kube, watches, 3, audit=tmp_path / "audit.jsonl")
    leader = the_leader(group)
    leader.until(lambda: len(live_keys(dev_server)) == 2 and emu.secret(NS, "beta") is not None, "both keys")
    standbys = [w for w in group if w is not leader]

    for watch in group:
        watch.until(partial(healthy, watch), "/healthz 200 on every replica")
    assert leader.metrics().get("keysync_leader") == 1.0
    assert [w.metrics().get("keysync_leader") for w in standbys] == [0.0, 0.0]
    assert all(not w.events("action") for w in standbys)
    created = [e for w in group for e in w.events("action") if e["action"] == "create"]
    assert sorted(e["name"] for e in created) == ["alpha", "beta"]
    assert all(e["result"] == "ok" for e in created)
    audited = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(line.get("event") == "leadership" and line["state"] == "leader" for line in audited)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_standby_takes_over_when_the_leader_goes(
    kube: Cli, emu: KubeEmu, dev_server: DevServer, watches: Watches, signum: signal.Signals
) -> None:
    group = replicas(kube, watches, 2)
    leader = the_leader(group)
    leader.until(lambda: len(live_keys(dev_server)) == 2, "both keys")
    [standby] = [w for w in group if w is not leader]

    leader.stop(signum)
    if signum == signal.SIGTERM:
        assert any(e["state"] == "released" for e in leader.events("leadership"))
    standby.until(lambda: leading(standby), "the standby to lead")
    delete_out_of_band(dev_server, live_keys(dev_server)["alpha"]["id"])
    standby.until(
        lambda: (
            "alpha" in live_keys(dev_server) and any(e["name"] == "alpha" for e in standby.events("action"))
        ),
        "the new leader to heal alpha",
    )
    value = emu.secret_value(NS, "alpha")
    assert value is not None and value[:11] == live_keys(dev_server)["alpha"]["key_prefix"]


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(
    emu: KubeEmu, kube: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.env["KUBECONFIG"])
    session = Session(Options(manifest=kube.cwd / "keysync.yaml", url="http://127.0.0.1:7080"))
    stream = io.StringIO()
    leadership = Leadership(session, 3.0, EventLog("json", stream), None, None)
    stopped: list[datetime] = []
    leadership.on_lost = lambda: stopped.append(datetime.now(UTC))
    try:
        assert leadership.leading()
        emu.fail(
            "GET", "/leases/", lambda: StatusError(503, "ServiceUnavailable", "etcd is down"), times=1000
        )
        assert leadership.lost.wait(6)

        lease = emu.lease(NS, session.sink.lease_name)  # type: ignore[attr-defined]
        assert lease is not None
        renewed = datetime.strptime(lease["spec"]["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert stopped[0] < renewed + timedelta(seconds=3.0)  # it stopped before anyone could take over
        assert not leadership.leading()
        states = [json.loads(line)["state"] for line in stream.getvalue().splitlines()]
        assert states == ["leader", "error", "standby"]
    finally:
        leadership.release()


def test_a_leader_whose_renewal_fails_fast_then_hangs_steps_down_before_a_standby_takes_over(
    emu: KubeEmu, kube: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.env["KUBECONFIG"])
    session = Session(Options(manifest=kube.cwd / "keysync.yaml", url="http://127.0.0.1:7080"))
    stream = io.StringIO()
    leadership = Leadership(session, 2.4, EventLog("json", stream), None, None)
    standby = session.sink.lease(2.4)  # type: ignore[attr-defined]
    standby.identity = "4242@standby-host"
    order: list[str] = []
    try:
        assert leadership.leading()
        assert not standby.try_acquire()  # it watches the leader's Lease from now on
        stuck = renewals_fail_fast_then_hang(emu)
        leadership.on_lost = lambda: order.append(f"the leader stopped, {len(stuck.held)} renewal held")
        while not standby.try_acquire():
            time.sleep(0.05)
        order.append("the standby took over")
        stuck.gate.set()
        assert not leadership.leading()
    finally:
        leadership.release()
    assert order == ["the leader stopped, 1 renewal held", "the standby took over"]
    states = [json.loads(line)["state"] for line in stream.getvalue().splitlines()]
    assert states == ["leader", "standby"]
    assert json.loads(stream.getvalue().splitlines()[-1])["holder"].startswith("4242@standby-host since")


def test_a_watch_outlives_the_rotation_of_its_service_account_token(
    kube: Cli, emu: KubeEmu, dev_server: DevServer, watches: Watches, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("bound-token-1")
    emu.add_user("system:serviceaccount:coder-ai-gateway:keysync", "bound-token-1")
    kube.env["KUBECONFIG"] = str(
        emu.kubeconfig(tmp_path / "sa-config", namespace=NS, user={"tokenFile": str(token)})
    )
    watch = watches.start(kube.cwd, kube.env, "--apply", "--leader-elect", "--lease-duration", "2s")
    watch.until(lambda: len(live_keys(dev_server)) == 2, "both keys")

    token.write_text("bound-token-2")  # the kubelet rotates the token; the old one stops working
    del emu.tokens["bound-token-1"]
    emu.add_user("system:serviceaccount:coder-ai-gateway:keysync", "bound-token-2")
    delete_out_of_band(dev_server, live_keys(dev_server)["beta"]["id"])

    watch.until(lambda: "beta" in live_keys(dev_server) and emu.secret_value(NS, "beta"), "beta healed")
    value = emu.secret_value(NS, "beta")
    assert value is not None and value[:11] == live_keys(dev_server)["beta"]["key_prefix"]
    assert leading(watch)
    assert "bound-token" not in watch.log()


def test_leader_election_needs_a_lock_that_hosts_share(tmp_path: Path) -> None:
    from keysync.errors import UsageError

    (tmp_path / "keysync.yaml").write_text("version: 1\nsink:\n  type: file\n  path: s.json\nkeys: []\n")
    session = Session(Options(manifest=tmp_path / "keysync.yaml", url="http://127.0.0.1:7080"))
    with pytest.raises(
        UsageError, match=r"--leader-elect needs a sink whose lock replicas on several hosts share"
    ):
        Leadership(session, 15, EventLog("json", io.StringIO()), None, None)
