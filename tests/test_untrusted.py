"""What a pull request can make keysync do: the manifest is untrusted, the environment is not.

A loopback "attacker" server stands where a hostile manifest points; every test proves that it
never receives a request, so no token reaches it, from plan or from apply.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from keysync.devserver import DevServer
from keysync.errors import HostNotAllowedError, UsageError
from keysync.hosts import env_endpoint, require_allowed

from baoserver import Bao, bao_fixture
from conftest import Cli, Run
from quietserver import QuietServer, Seen

__all__ = ["bao_fixture"]  # a fixture: pytest finds it here


class _Recorder(BaseHTTPRequestHandler):
    """Records every request and answers like a Vault that grants everything."""

    server: Attacker

    def _record(self) -> None:
        self.server.seen.append(Seen(self.command, self.path, dict(self.headers)))
        body = b'{"data": {"keys": []}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _record

    def log_message(self, format: str, *args: object) -> None:
        pass


class Attacker(QuietServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    server.serve_in_background()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def vault_manifest(prefix: str, address: str | None = None, auth: str = "") -> str:
    lines = ["version: 1", "sink:", "  type: vault", f"  path: {prefix}/{{name}}"]
    if address:
        lines.append(f"  address: {address}")
    if auth:
        lines.append(auth)
    return "\n".join([*lines, "keys: [alpha, beta]", ""])


def hostport(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def one_error_line(run: Run) -> str:
    assert run.code == 1, run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("keysync: error: "), run
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run
    return lines[0]


def vault_entries(bao: Bao, prefix: str) -> list[str]:
    response = bao.api("LIST", f"secret/metadata/{prefix}")
    listed = response.json()["data"]["keys"] if response.status_code == 200 else []
    return sorted(name for name in listed if not name.startswith("."))  # not the sink's lock


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
