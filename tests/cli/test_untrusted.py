"""What a pull request can make keysync do: the manifest is untrusted, the environment is not.

A loopback "attacker" server stands where a hostile manifest points; every test proves that it
never receives a request, so no token reaches it, from plan or from apply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from attackers import Attacker, hostport, one_error_line, prefix, vault_entries, vault_manifest

from keysync.devserver import DevServer
from keysync.errors import HostNotAllowedError, UsageError
from keysync.hosts import env_endpoint, require_allowed

from baoserver import Bao, bao_fixture
from conftest import Cli

__all__ = ["bao_fixture", "prefix"]  # fixtures: pytest finds them here


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    server.serve_in_background()
    yield server
    server.stop()


# --- the environment's endpoint wins, and plan says so ----------------------------------------------


def test_vault_addr_beats_sink_address_in_plan_and_apply(
    cli: Cli, bao: Bao, attacker: Attacker, prefix: str
) -> None:
    cli.env.update(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token)
    cli.write_manifest(vault_manifest(prefix, attacker.url))

    text = cli("plan")
    warning = f"VAULT_ADDR ({bao.address}) overrides the manifest's sink.address ({attacker.url})"
    assert text.code == 0 and warning in text.stdout, text
    as_json = cli("plan", "--format", "json")
    assert any(warning in line for line in json.loads(as_json.stdout)["warnings"]), as_json
    assert warning in cli("plan", "--format", "markdown").stdout
    applied = cli("apply", "--auto-approve")

    assert applied.code == 0, applied
    assert vault_entries(bao, prefix) == ["alpha", "beta"]
    assert attacker.seen == []
    assert all(bao.root_token not in run.stdout + run.stderr for run in cli.runs)


def test_coder_url_beats_coderd_url_in_plan_and_apply(
    cli: Cli, dev_server: DevServer, attacker: Attacker, tmp_path: Path
) -> None:
    cli.write_manifest(f"version: 1\ncoderd:\n  url: {attacker.url}\nkeys: [alpha]\n")

    plan = cli("plan", "--format", "json")
    applied = cli("apply", "--auto-approve")

    assert plan.code == 0, plan
    warnings = json.loads(plan.stdout)["warnings"]
    assert any(f"overrides the manifest's coderd.url ({attacker.url})" in w for w in warnings), plan
    assert applied.code == 0, applied
    assert attacker.seen == []


# --- KEYSYNC_ALLOWED_HOSTS ----------------------------------------------------------------------------


def test_allowed_hosts_refuse_a_vault_address_before_connecting(
    cli: Cli, bao: Bao, dev_server: DevServer, attacker: Attacker, prefix: str
) -> None:
    cli.env.update(
        VAULT_TOKEN=bao.root_token,
        KEYSYNC_ALLOWED_HOSTS=f"{hostport(dev_server.url)}, {hostport(bao.address)}",
    )
    cli.write_manifest(vault_manifest(prefix, attacker.url))

    for run in (cli("plan"), cli("apply", "--auto-approve")):
        line = one_error_line(run)
        assert f"KEYSYNC_ALLOWED_HOSTS does not allow {attacker.hostport}" in line
        assert "sink.address" in line
    assert attacker.seen == []
    cli.write_manifest(vault_manifest(prefix, bao.address))
    assert cli("apply", "--auto-approve").code == 0  # the allowed one works
    assert vault_entries(bao, prefix) == ["alpha", "beta"]


def test_allowed_hosts_refuse_a_coder_url_before_connecting(
    cli: Cli, dev_server: DevServer, attacker: Attacker
) -> None:
    cli.env.update(
        CODER_URL=attacker.url, KEYSYNC_ALLOWED_HOSTS=f"coder.example.com,{hostport(dev_server.url)}"
    )
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    for command in (["plan"], ["apply", "--auto-approve"], ["status"], ["export"]):
        line = one_error_line(cli(*command))
        assert f"does not allow {attacker.hostport} (the Coder URL, from CODER_URL)" in line
    assert attacker.seen == []


def test_allowed_hosts_take_names_wildcards_and_any_port(cli: Cli, dev_server: DevServer) -> None:
    port = dev_server.url.rsplit(":", 1)[1]
    cli.env["CODER_URL"] = f"http://localhost:{port}"
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    cli.env["KEYSYNC_ALLOWED_HOSTS"] = "*.localhost,127.0.0.1"
    assert "does not allow localhost:" in one_error_line(cli("plan"))
    cli.env["KEYSYNC_ALLOWED_HOSTS"] = "*.example.com, LOCALHOST"
    assert cli("plan").code == 0
    cli.env["KEYSYNC_ALLOWED_HOSTS"] = "localhost:notaport"
    assert "'localhost:notaport' is not host or host:port" in one_error_line(cli("plan"))


def test_allowed_hosts_rules() -> None:
    env = {"KEYSYNC_ALLOWED_HOSTS": "*.corp.example, vault.example.com:8200, [::1]:7080, ::2"}
    for url in ("https://a.corp.example", "https://a.b.corp.example:9", "https://vault.example.com:8200"):
        require_allowed(url, env, "test")
    require_allowed("http://[::1]:7080", env, "test")
    require_allowed("http://[::2]:1", env, "test")
    for url in (
        "https://corp.example",
        "https://vault.example.com",
        "https://evilcorp.example",
        "http://[::1]:80",
    ):
        with pytest.raises(HostNotAllowedError):
            require_allowed(url, env, "test")
    require_allowed("https://anything.example", {"KEYSYNC_ALLOWED_HOSTS": " "}, "test")  # blank: unset
    with pytest.raises(UsageError, match="is not host or host:port"):
        require_allowed("https://a.example", {"KEYSYNC_ALLOWED_HOSTS": "a.*.example"}, "test")


def test_env_endpoint_wins_and_warns() -> None:
    env = {"VAULT_ADDR": "https://vault.corp:8200/"}
    found = env_endpoint(env, "VAULT_ADDR", "sink.address", "https://evil.example", "tokens go there")
    assert found is not None and found.value == "https://vault.corp:8200/" and found.from_environment
    assert found.warning == (
        "VAULT_ADDR (https://vault.corp:8200/) overrides the manifest's sink.address "
        "(https://evil.example): tokens go there"
    )
    same = env_endpoint(env, "VAULT_ADDR", "sink.address", "https://vault.corp:8200", "x")
    assert same is not None and same.warning is None
    manifest_only = env_endpoint({}, "VAULT_ADDR", "sink.address", "https://v.example", "x")
    assert manifest_only is not None and not manifest_only.from_environment
    assert env_endpoint({}, "VAULT_ADDR", "sink.address", None, "x") is None


# --- credential files the manifest names -------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        "  auth:\n    token_file: {file}",
        "  auth:\n    method: approle\n    role_id: r\n    secret_id_file: {file}",
    ],
    ids=["token_file", "secret_id_file"],
)
def test_a_credential_file_goes_only_where_the_environment_says(
    cli: Cli, attacker: Attacker, prefix: str, tmp_path: Path, auth: str
) -> None:
    stolen = tmp_path / "coder-session-token"
    stolen.write_text(cli.env["CODER_SESSION_TOKEN"] + "\n")
    cli.env.pop("VAULT_TOKEN", None)
    cli.write_manifest(vault_manifest(prefix, attacker.url, auth.format(file=stolen)))

    for run in (cli("plan"), cli("apply", "--auto-approve")):
        line = one_error_line(run)
        assert "is read only when the environment names the Vault server" in line
    assert attacker.seen == []


def test_a_token_file_is_used_when_vault_addr_pins_the_server(
    cli: Cli, bao: Bao, attacker: Attacker, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "vault-token").write_text(bao.root_token)
    cli.env["VAULT_ADDR"] = bao.address
    cli.write_manifest(vault_manifest(prefix, attacker.url, "  auth:\n    token_file: vault-token"))

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert vault_entries(bao, prefix) == ["alpha", "beta"]
    assert attacker.seen == []


def test_a_sink_path_at_a_credential_file_never_shows_its_content(cli: Cli, tmp_path: Path) -> None:
    stolen = tmp_path / "coder-session-token"
    stolen.write_text(cli.env["CODER_SESSION_TOKEN"] + "\n")
    for sink in ("  type: file", "  type: file\n  format: env"):
        cli.write_manifest(f"version: 1\nsink:\n{sink}\n  path: {stolen}\nkeys: [alpha]\n")
        for args in (("plan", "--format", "markdown"), ("apply", "--auto-approve")):
            line = one_error_line(cli(*args))
            assert str(stolen) in line and cli.env["CODER_SESSION_TOKEN"] not in line
    assert stolen.read_text() == cli.env["CODER_SESSION_TOKEN"] + "\n"
