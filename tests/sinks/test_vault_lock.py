"""The vault sink as apply's preflight and its lock, against a real OpenBao dev server on loopback:
plan names what apply would fail on, plain http off loopback is refused, and two applies writing
the same path prefix never run at once."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from vaultfixtures import READ_ONLY, assert_nothing_leaked, lock_entry, manifest, prefix, vault_cli

from keysync.devserver import DevServer
from keysync.errors import LockHeldError, SinkError
from keysync.manifest.sinks import VaultSinkConfig
from keysync.sinks.base import SinkContext
from keysync.sinks.vault import VaultSink
from keysync.sinks.vault_lock import VaultLock

from baoserver import Bao, bao_fixture
from coderlive import live_keys
from conftest import Cli, random_record

__all__ = ["bao_fixture", "prefix", "vault_cli"]  # fixtures: pytest finds them here


@pytest.fixture
def holder(bao: Bao, prefix: str, dev_server: DevServer, tmp_path: Path) -> Iterator[VaultSink]:
    """A vault sink on the same path prefix as the CLI's, held by this test process."""
    config = VaultSinkConfig.model_validate({"type": "vault", "path": f"{prefix}/{{name}}"})
    env = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.root_token}
    sink = VaultSink(config, SinkContext(tmp_path, dev_server.url, env, timeout=5))
    yield sink
    sink.close()


# --- plan is the preflight ----------------------------------------------------------------------


def test_plan_with_a_token_that_may_not_create_exits_1_naming_what_apply_would_lack(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    token = bao.token(bao.policy(READ_ONLY))
    vault_cli.env["VAULT_TOKEN"] = token
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))

    run = vault_cli("plan")
    as_json = vault_cli("plan", "--format", "json")

    assert run.code == 1, run
    assert "+ create alpha" in run.stdout
    assert "apply would fail" in run.stderr and "lacks create, update on secret/data/" in run.stderr
    assert as_json.code == 1, as_json
    assert json.loads(as_json.stdout)["actions"][0]["name"] == "alpha"
    assert live_keys(dev_server) == {}
    assert_nothing_leaked(vault_cli, bao, token)


def test_plan_without_changes_needs_no_write_capability(vault_cli: Cli, bao: Bao, prefix: str) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))
    assert vault_cli("apply", "--auto-approve").code == 0
    vault_cli.env["VAULT_TOKEN"] = bao.token(bao.policy(READ_ONLY))

    run = vault_cli("plan", "--detailed-exitcode")

    assert run.code == 0, run


# --- plain http -------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["http://vault.example.com:8200", "http://10.0.0.5:8200"])
def test_plain_http_to_a_host_off_loopback_is_refused_before_connecting(
    vault_cli: Cli, prefix: str, address: str, dev_server: DevServer
) -> None:
    vault_cli.env["VAULT_ADDR"] = address
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))

    for command in (["plan"], ["apply", "--auto-approve"]):
        run = vault_cli(*command)
        assert run.code == 1, run
        assert "plain http://" in run.stderr and "use https://" in run.stderr
        assert "Traceback" not in run.stderr
    assert live_keys(dev_server) == {}


# --- the lock ----------------------------------------------------------------------------------------


def test_a_second_apply_fails_at_once_naming_the_holder(
    vault_cli: Cli, holder: VaultSink, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))

    with holder.lock(None):
        run = vault_cli("apply", "--auto-approve")

    assert run.code == 1, run
    assert f"is held by process {os.getpid()} on " in run.stderr
    assert "--lock-timeout" in run.stderr
    assert live_keys(dev_server) == {}


def test_lock_timeout_waits_for_the_holder_to_finish(
    vault_cli: Cli, holder: VaultSink, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))
    released = threading.Event()

    def hold() -> None:
        with holder.lock(None):
            released.wait(1.0)

    holding = threading.Thread(target=hold)
    holding.start()
    try:
        run = vault_cli("apply", "--auto-approve", "--lock-timeout", "30s")
    finally:
        released.set()
        holding.join()

    assert run.code == 0, run
    assert set(live_keys(dev_server)) == {"alpha"}
    assert lock_entry(bao, prefix).get("released") is True


def test_a_lock_whose_holder_stopped_renewing_is_taken_over_once_expired(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))
    stale = {"owner": "x", "pid": 4242, "host": "elsewhere", "since": "2026-01-01T00:00:00+00:00"}
    bao.ok("POST", f"secret/data/{prefix}/.keysync-lock", {"data": {**stale, "expires_at": 4e9}})

    held = vault_cli("apply", "--auto-approve")
    bao.ok("POST", f"secret/data/{prefix}/.keysync-lock", {"data": {**stale, "expires_at": 1.0}})
    taken = vault_cli("apply", "--auto-approve")

    assert held.code == 1 and "held by process 4242 on elsewhere since 2026-01-01" in held.stderr, held
    assert taken.code == 0, taken
    assert set(live_keys(dev_server)) == {"alpha"}


def test_the_holder_pushes_the_expiry_forward_and_a_rival_waits_for_it(
    holder: VaultSink, bao: Bao, prefix: str
) -> None:
    now = [1_000.0]
    path = f"secret/data/{prefix}/.keysync-lock"
    api = holder._api  # the lock on its own, with a clock the test moves
    ours = VaultLock(api, path, lease_seconds=30, clock=lambda: now[0])
    rival = VaultLock(api, path, lease_seconds=30, clock=lambda: now[0])

    ours.acquire(None)
    first = lock_entry(bao, prefix)["expires_at"]
    now[0] += 20
    assert ours.renew()
    now[0] += 20  # past the first expiry, within the renewed one
    with pytest.raises(LockHeldError):
        rival.acquire(None)
    now[0] += 20

    rival.acquire(None)

    assert lock_entry(bao, prefix)["expires_at"] == now[0] + 30 > first
    assert not ours.renew(), "a holder whose lock was taken over must notice it"


def test_a_lock_taken_over_while_held_stops_the_writes(holder: VaultSink, bao: Bao, prefix: str) -> None:
    path = f"secret/data/{prefix}/.keysync-lock"
    with VaultLock(holder._api, path, lease_seconds=1.5).held(None) as keeper:
        holder._keeper = keeper  # as the sink's own lock() sets it
        holder.store(random_record("alpha", holder._url))
        # Another apply writes itself in (as if this one's renewals had not reached Vault).
        version = bao.ok("GET", path)["data"]["metadata"]["version"]
        rival = {"owner": "rival", "pid": 1, "host": "elsewhere", "since": "now", "expires_at": 4e9}
        bao.ok("POST", path, {"options": {"cas": version}, "data": rival})
        assert keeper.lost.wait(5), "the next renewal must find the lock taken over"
        with pytest.raises(SinkError, match=r"the sink's lock .* was lost"):
            holder.store(random_record("beta", holder._url))
        with pytest.raises(SinkError, match="was lost"):
            holder.remove("alpha")
        holder._keeper = None
    listed = bao.ok("LIST", f"secret/metadata/{prefix}")["data"]["keys"]
    assert "alpha" in listed and "beta" not in listed
    assert lock_entry(bao, prefix)["owner"] == "rival"  # releasing left the rival's entry alone
