"""The vault sink against a real OpenBao dev server on loopback, and `keysync` end to end."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import ValidationError
from vaultfixtures import READ_ONLY, assert_nothing_leaked, manifest, prefix, vault_cli

from keysync.devserver import DevServer
from keysync.errors import SinkError
from keysync.keys import SecretRecord
from keysync.manifest.sinks import VaultSinkConfig
from keysync.sinks.base import SinkContext
from keysync.sinks.vault import VaultSink

from baoserver import Bao, bao_fixture, free_port
from coderlive import live_keys
from conftest import Cli, random_record

__all__ = ["bao_fixture", "prefix", "vault_cli"]  # fixtures: pytest finds them here

URL = "http://127.0.0.1:7080"
Make = Callable[..., VaultSink]
WRITER = """
path "secret/data/*" { capabilities = ["create", "update", "read"] }
path "secret/metadata/*" { capabilities = ["read", "list", "update", "delete"] }
"""


@pytest.fixture
def make(bao: Bao, tmp_path: Path, prefix: str) -> Iterator[Make]:
    """Opens vault sinks on the dev server; settings and env entries override the defaults."""
    opened: list[VaultSink] = []

    def make(env: dict[str, str] | None = None, url: str = URL, **settings: Any) -> VaultSink:
        # VAULT_ADDR beats sink.address: a test that names an address leaves it unset.
        address = {} if "address" in settings else {"VAULT_ADDR": bao.address}
        environment = {**address, "VAULT_TOKEN": bao.root_token, **(env or {})}
        config = VaultSinkConfig.model_validate({"type": "vault", "path": f"{prefix}/{{name}}", **settings})
        sink = VaultSink(config, SinkContext(tmp_path, url, environment, timeout=5))
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def record(name: str, url: str = URL) -> SecretRecord:
    return random_record(name, url)


def refused(call: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(SinkError) as raised:
        call(*args, **kwargs)
    return str(raised.value)


# --- storing and reading ---------------------------------------------------------------------------


def test_store_writes_the_record_and_its_custom_metadata(bao: Bao, make: Make, prefix: str) -> None:
    item = record("alpha")
    make().store(item)

    entry = bao.ok("GET", f"secret/data/{prefix}/alpha")["data"]
    assert entry["data"] == item.document()
    assert set(entry["data"]) == {"name", "key", "id", "key_prefix", "created_at", "coderd_url"}
    metadata = bao.ok("GET", f"secret/metadata/{prefix}/alpha")["data"]
    assert metadata["custom_metadata"] == item.public()


def test_read_lists_the_directory_and_reports_secret_prefixes(bao: Bao, make: Make, prefix: str) -> None:
    items = [record(name) for name in ("alpha", "beta", "gamma")]
    writer = make()
    for item in items:
        writer.store(item)
    bao.ok("POST", f"secret/data/{prefix}/Not_A_Key", {"data": {"x": "1"}})
    bao.ok("POST", f"secret/data/{prefix}/folder/delta", {"data": {"x": "1"}})

    view = make().read()

    assert view.readable
    assert sorted(view.entries) == ["alpha", "beta", "gamma"]
    for item in items:
        entry = view.entries[item.name]
        assert (entry.id, entry.key_prefix, entry.coderd_url) == (item.id, item.key_prefix, URL)
        assert entry.secret_prefix == item.key.reveal()[:11]


def test_read_of_a_directory_that_does_not_exist_is_empty(make: Make) -> None:
    assert make().read().entries == {}


def test_a_template_with_a_prefix_and_a_suffix(bao: Bao, make: Make, prefix: str) -> None:
    sink = make(path=f"/{prefix}/team/key-{{name}}-v1/")
    sink.store(record("alpha"))
    bao.ok("POST", f"secret/data/{prefix}/team/other", {"data": {"x": "1"}})

    assert bao.ok("GET", f"secret/data/{prefix}/team/key-alpha-v1")["data"]["data"]["name"] == "alpha"
    assert list(make(path=f"{prefix}/team/key-{{name}}-v1").read().entries) == ["alpha"]


def test_a_template_without_a_directory(bao: Bao, make: Make, prefix: str) -> None:
    sink = make(path=f"{prefix}-{{name}}")
    sink.store(record("alpha"))
    assert list(make(path=f"{prefix}-{{name}}").read().entries) == ["alpha"]


@pytest.mark.parametrize(
    "template", ["{name}/secret", "a/{name}/b", "a/{name}-{name}", "a//{name}", "a/{other}-{name}"]
)
def test_name_goes_once_in_the_last_segment(make: Make, template: str) -> None:
    with pytest.raises(SinkError, match="last segment"):
        make(path=template)


def test_a_template_without_name_is_a_settings_error(make: Make) -> None:
    with pytest.raises(ValueError, match="name"):
        make(path="keysync/static")


def test_records_of_another_deployment_are_left_alone(bao: Bao, make: Make, prefix: str) -> None:
    theirs = record("alpha", url="https://other.example.com")
    make(url=theirs.coderd_url).store(theirs)

    sink = make()
    assert sink.read().entries == {}
    message = refused(sink.store, record("alpha"))
    assert "another deployment" in message
    sink.remove("alpha")

    assert bao.ok("GET", f"secret/data/{prefix}/alpha")["data"]["data"] == theirs.document()


def test_parallel_stores_from_many_threads(make: Make) -> None:
    sink = make()
    items = [record(f"key-{n}") for n in range(24)]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(sink.store, items))
    assert sorted(make().read().entries) == sorted(item.name for item in items)


# --- check-and-set ---------------------------------------------------------------------------------


def test_a_path_created_behind_the_sinks_back_is_a_conflict(bao: Bao, make: Make, prefix: str) -> None:
    sink = make()
    sink.read()
    bao.ok("POST", f"secret/data/{prefix}/alpha", {"data": {"key": "theirs"}})

    item = record("alpha")
    message = refused(sink.store, item)

    assert "check-and-set" in message and "another writer" in message
    assert f"secret/data/{prefix}/alpha" in message and bao.address in message
    assert item.key.reveal() not in message and bao.root_token not in message
    assert bao.ok("GET", f"secret/data/{prefix}/alpha")["data"]["data"] == {"key": "theirs"}


def test_an_entry_changed_between_read_and_store_is_a_conflict(bao: Bao, make: Make, prefix: str) -> None:
    make().store(record("alpha"))
    sink = make()
    assert "alpha" in sink.read().entries
    bao.ok("POST", f"secret/data/{prefix}/alpha", {"data": {"key": "theirs"}})

    assert "check-and-set expected version 1" in refused(sink.store, record("alpha"))
    assert "check-and-set expected version 1" in refused(sink.store, record("alpha"))  # still theirs


def test_replacing_an_entry_uses_the_version_read(bao: Bao, make: Make, prefix: str) -> None:
    make().store(record("alpha"))
    sink = make()
    sink.read()
    new = record("alpha")
    sink.store(new)

    assert make().read().entries["alpha"].secret_prefix == new.key.reveal()[:11]
    assert bao.ok("GET", f"secret/metadata/{prefix}/alpha")["data"]["current_version"] == 2


def test_a_sink_that_never_read_reads_the_version_before_writing(make: Make) -> None:
    make().store(record("alpha"))
    new = record("alpha")
    make().store(new)
    assert make().read().entries["alpha"].key_prefix == new.key_prefix


# --- deleting and drift ----------------------------------------------------------------------------


def test_remove_deletes_all_versions_so_the_name_can_be_reused(bao: Bao, make: Make, prefix: str) -> None:
    sink = make()
    sink.store(record("alpha"))
    sink.store(record("alpha"))
    sink.remove("alpha")

    assert bao.api("GET", f"secret/metadata/{prefix}/alpha").status_code == 404
    sink.remove("alpha")  # already gone: fine
    make().remove("never-there")
    make().store(record("alpha"))
    assert bao.ok("GET", f"secret/metadata/{prefix}/alpha")["data"]["current_version"] == 1


def test_an_entry_deleted_by_hand_is_missing_and_can_be_written_again(
    bao: Bao, make: Make, prefix: str
) -> None:
    make().store(record("alpha"))
    bao.ok("DELETE", f"secret/data/{prefix}/alpha")  # a soft delete: the version stays

    sink = make()
    assert sink.read().entries == {}
    sink.store(record("alpha"))
    assert list(make().read().entries) == ["alpha"]


# --- check_writable --------------------------------------------------------------------------------


def test_check_writable_accepts_root_and_a_writer_policy(bao: Bao, make: Make) -> None:
    make().check_writable()
    make(env={"VAULT_TOKEN": bao.token(bao.policy(WRITER))}).check_writable()


def test_check_writable_names_the_missing_capabilities(bao: Bao, make: Make, prefix: str) -> None:
    token = bao.token(bao.policy(READ_ONLY))
    sink = make(env={"VAULT_TOKEN": token})
    assert sink.read().entries == {}

    message = refused(sink.check_writable)

    assert f"create, update on secret/data/{prefix}/keysync-preflight" in message
    assert f"update, delete on secret/metadata/{prefix}/keysync-preflight" in message
    assert token not in message


def test_check_writable_refuses_an_invalid_token(bao: Bao, make: Make) -> None:
    token = f"s.{uuid.uuid4().hex}"
    message = refused(make(env={"VAULT_TOKEN": token}).check_writable)
    assert "invalid or has expired" in message and bao.address in message
    assert token not in message


def test_a_denied_write_names_address_and_path(bao: Bao, make: Make, prefix: str) -> None:
    token = bao.token(bao.policy(READ_ONLY))
    item = record("alpha")
    message = refused(make(env={"VAULT_TOKEN": token}).store, item)
    assert message.startswith(f"vault {bao.address}: writing secret/data/{prefix}/alpha: permission denied")
    assert token not in message and item.key.reveal() not in message


# --- authentication and namespaces -----------------------------------------------------------------


def test_token_file_relative_to_the_manifest(bao: Bao, make: Make, tmp_path: Path) -> None:
    (tmp_path / "vault-token").write_text(bao.root_token + "\n")
    sink = make(env={"VAULT_TOKEN": "not-this-one"}, auth={"token_file": "vault-token"})
    sink.check_writable()
    sink.store(record("alpha"))


def test_approle_login(bao: Bao, make: Make, tmp_path: Path) -> None:
    role_id, secret_id = bao.approle(bao.policy(WRITER))
    (tmp_path / "secret-id").write_text(secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": "secret-id"}
    sink = make(env={"VAULT_TOKEN": ""}, auth=auth)

    sink.check_writable()
    sink.store(record("alpha"))
    assert list(sink.read().entries) == ["alpha"]


def test_approle_login_refused(bao: Bao, make: Make, tmp_path: Path) -> None:
    role_id, _ = bao.approle(bao.policy(WRITER))
    wrong = str(uuid.uuid4())
    (tmp_path / "secret-id").write_text(wrong)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": "secret-id"}

    message = refused(make(auth=auth).read)

    assert "logging in with AppRole at auth/approle/login: answered 400: invalid role or secret ID" in message
    assert "\n" not in message
    assert wrong not in message and bao.root_token not in message


def test_approle_needs_a_role_id() -> None:
    # Refused by the settings model, so `keysync validate` catches it offline.
    with pytest.raises(ValidationError, match="role_id"):
        VaultSinkConfig.model_validate({"type": "vault", "auth": {"method": "approle"}})


def test_namespace_from_the_environment(bao: Bao, make: Make, prefix: str) -> None:
    namespace = bao.namespace()
    sink = make(env={"VAULT_NAMESPACE": namespace})
    sink.check_writable()
    sink.store(record("alpha"))

    assert bao.api("GET", f"secret/data/{prefix}/alpha", namespace=namespace).status_code == 200
    assert bao.api("GET", f"secret/data/{prefix}/alpha").status_code == 404
    assert namespace in sink.describe()
    assert list(make(namespace=namespace).read().entries) == ["alpha"]


# --- failures --------------------------------------------------------------------------------------


def test_connection_refused(make: Make, prefix: str) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    message = refused(make(address=address).read)
    assert message.startswith(f"vault {address}: listing secret/metadata/{prefix}: cannot connect")


def test_tls_to_a_plain_http_server(bao: Bao, make: Make) -> None:
    address = bao.address.replace("http://", "https://")
    assert "TLS failure" in refused(make(address=address).check_writable)


class FakeVault(BaseHTTPRequestHandler):
    """Answers 503 as a sealed Vault does, or, for tokens starting with "echo", repeats the token."""

    def do_GET(self) -> None:
        token = self.headers.get("X-Vault-Token", "")
        if token.startswith("echo"):
            status, errors = 400, [f"1 error occurred:\n\t* token {token} is odd\n\n"]
        else:
            status, errors = 503, ["Vault is sealed"]
        body = json.dumps({"errors": errors}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_vault() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVault)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_sealed_vault(make: Make, fake_vault: ThreadingHTTPServer, prefix: str) -> None:
    address = f"http://127.0.0.1:{fake_vault.server_address[1]}"
    message = refused(make(address=address).read)
    assert message == (
        f"vault {address}: listing secret/metadata/{prefix}: "
        "Vault is sealed or unavailable (503: Vault is sealed)"
    )


def test_a_token_in_an_error_from_vault_is_masked(make: Make, fake_vault: ThreadingHTTPServer) -> None:
    token = f"echo-{uuid.uuid4().hex}"
    address = f"http://127.0.0.1:{fake_vault.server_address[1]}"
    message = refused(make(address=address, env={"VAULT_TOKEN": token}).read)
    assert message.endswith("answered 400: 1 error occurred: * token ********** is odd")
    assert token not in message


def test_ca_cert_trusts_a_private_ca(
    make: Make, fake_vault: ThreadingHTTPServer, tmp_path: Path, bao: Bao
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    fake_vault.socket = server_context.wrap_socket(fake_vault.socket, server_side=True)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    address = f"https://127.0.0.1:{fake_vault.server_address[1]}"

    assert "TLS failure" in refused(make(address=address).read)
    assert "sealed" in refused(make(address=address, ca_cert="ca.pem").read)
    assert "sealed" in refused(make(address=address, env={"VAULT_CACERT": str(tmp_path / "ca.pem")}).read)


def test_settings_that_cannot_work(make: Make, tmp_path: Path) -> None:
    assert "no address" in refused(make, {"VAULT_ADDR": ""})
    assert "no Vault token" in refused(make, {"VAULT_TOKEN": ""})
    assert "must start with" in refused(make, address="vault:8200")
    assert "cannot read" in refused(make, auth={"token_file": "missing"})
    assert "larger than 64 KiB" in refused(make, auth={"token_file": "/dev/zero"})  # read whole, endless
    assert "cannot load" in refused(make, ca_cert="missing.pem")


def test_the_token_is_never_shown(bao: Bao, make: Make) -> None:
    sink = make()
    text = repr(sink) + repr(vars(sink)) + repr(vars(sink._api)) + sink.describe()
    assert bao.root_token not in text


# --- end to end --------------------------------------------------------------------------------------


def plan_actions(cli: Cli) -> list[tuple[str, str, str]]:
    run = cli("plan", "--format", "json")
    assert run.code == 0, run
    return [(a["action"], a["name"], a["reason"]) for a in json.loads(run.stdout)["actions"]]


def test_apply_delivers_every_secret_and_then_has_nothing_to_do(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))

    run = vault_cli("apply", "--auto-approve")
    assert run.code == 0, run
    entries = {
        name: bao.ok("GET", f"secret/data/{prefix}/{name}")["data"]["data"] for name in ("alpha", "beta")
    }
    assert all(entry["coderd_url"] == dev_server.url for entry in entries.values())
    assert all(entry["key"][:11] == entry["key_prefix"] for entry in entries.values())
    assert plan_actions(vault_cli) == []
    again = vault_cli("apply", "--auto-approve")
    assert again.code == 0 and "No changes" in again.stdout
    for entry in entries.values():
        assert entry["key"] not in "".join(r.stdout + r.stderr for r in vault_cli.runs)
    assert_nothing_leaked(vault_cli, bao)


def test_apply_with_a_read_only_token_creates_no_key(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    token = bao.token(bao.policy(READ_ONLY))
    vault_cli.env["VAULT_TOKEN"] = token
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))

    run = vault_cli("apply", "--auto-approve")

    assert run.code == 1, run
    assert "lacks create, update on secret/data/" in run.stderr
    assert sorted(live_keys(dev_server)) == []
    assert_nothing_leaked(vault_cli, bao, token)


def test_an_entry_deleted_by_hand_is_planned_and_restored(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))
    assert vault_cli("apply", "--auto-approve").code == 0
    bao.ok("DELETE", f"secret/metadata/{prefix}/alpha")

    text = vault_cli("plan")
    assert "-/+ replace alpha  (secret-missing)" in text.stdout, text
    assert plan_actions(vault_cli) == [("replace", "alpha", "secret-missing")]
    assert vault_cli("apply", "--auto-approve").code == 0
    assert plan_actions(vault_cli) == []
    assert_nothing_leaked(vault_cli, bao)


def test_a_key_removed_from_the_manifest_loses_its_entry(
    vault_cli: Cli, bao: Bao, prefix: str, dev_server: DevServer
) -> None:
    vault_cli.write_manifest(manifest(prefix, ["alpha", "beta"]))
    assert vault_cli("apply", "--auto-approve").code == 0
    vault_cli.write_manifest(manifest(prefix, ["alpha"]))

    run = vault_cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert sorted(live_keys(dev_server)) == ["alpha"]
    assert bao.api("GET", f"secret/metadata/{prefix}/beta").status_code == 404
    assert bao.api("GET", f"secret/metadata/{prefix}/alpha").status_code == 200
    assert_nothing_leaked(vault_cli, bao)


@pytest.mark.parametrize("options", [None, {"version": "1"}])
def test_a_mount_that_is_not_kv_version_2_is_refused_before_any_change(
    bao: Bao, make: Make, options: dict[str, str] | None
) -> None:
    mount = f"m{uuid.uuid4().hex[:8]}"
    if options is not None:
        response = httpx.post(
            f"{bao.address}/v1/sys/mounts/{mount}",
            headers={"X-Vault-Token": bao.root_token},
            json={"type": "kv", "options": options},
        )
        assert response.status_code == 204, response.text
    message = refused(make(mount=mount).check_writable)
    assert f"mount {mount!r} is not a KV version 2" in message
    assert bao.root_token not in message
