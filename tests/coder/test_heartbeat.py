"""Coder's newest servers list `last_heartbeat_at`, its first ones `last_used_at`: the in-use
guard, status and plan work from either, and say Coder's own word, "last heartbeat". Against
the dev server with a replica connected over the gateway's WebSocket handshake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysync.devserver import DevServer, DevServerConfig

from conftest import OWNER_TOKEN, Cli, base_env
from replica import IN, gateway_status


@pytest.fixture(params=["last_heartbeat_at", "last_used_at"])
def heartbeat_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    field: str = request.param
    config = DevServerConfig(port=0, token=OWNER_TOKEN, seed=7, api="ai-gateway-keys", last_seen_field=field)
    with DevServer(config) as server:
        env = {**base_env(), "CODER_URL": server.url, "CODER_SESSION_TOKEN": server.token}
        yield Cli(tmp_path, env), field


def test_a_key_with_a_recent_heartbeat_is_in_use_whichever_field_says_so(
    heartbeat_cli: tuple[Cli, str],
) -> None:
    cli, field = heartbeat_cli
    cli.write_manifest("version: 1\nkeys:\n  - alpha\n")
    assert cli("apply", "--auto-approve").code == 0
    secret = json.loads((cli.cwd / "secrets" / "ai-gateway-keys.json").read_text())["keys"]["alpha"]["key"]
    assert gateway_status(cli.env["CODER_URL"], secret) == IN  # a replica connects: a heartbeat

    status = cli("status", "--format", "json")
    assert status.code == 0, status
    [row] = json.loads(status.stdout)["keys"]
    assert row["in_use"] is True
    assert row["last_heartbeat_at"] is not None and row["last_heartbeat_at"] == row["last_used_at"]
    assert "LAST HEARTBEAT" in cli("status").stdout

    cli.write_manifest("version: 1\nkeys: []\n")  # prune would delete alpha, which is in use
    plan = cli("plan")
    assert "last heartbeat" in plan.stdout and "had a heartbeat in the last 10 minutes" in plan.stdout, plan
    refused = cli("apply", "--auto-approve")
    assert refused.code == 1, refused
    assert "had a heartbeat in the last 10 minutes" in refused.stderr, (field, refused)
