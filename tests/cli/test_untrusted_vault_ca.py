"""VAULT_CACERT beats the manifest's sink.ca_cert, as VAULT_ADDR beats sink.address: the CA decides
which server is trusted with the Vault token, so a pull request must not choose it. The attacker
here stands at VAULT_ADDR itself (as a man in the middle would) with a certificate from a CA the
pull request adds."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from attackers import Attacker, one_error_line, prefix, vault_entries, vault_manifest

from baoserver import Bao, bao_fixture
from conftest import Cli

__all__ = ["bao_fixture", "prefix"]  # fixtures: pytest finds them here


@pytest.fixture
def tls_attacker(tmp_path: Path) -> Iterator[tuple[Attacker, Path]]:
    """A recording server over HTTPS with a certificate from its own CA, and that CA's file."""
    evil = trustme.CA()
    server = Attacker()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    evil.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    evil.cert_pem.write_to_path(str(tmp_path / "evil-ca.pem"))
    server.serve_in_background()
    yield server, tmp_path / "evil-ca.pem"
    server.stop()


def write_ca(path: Path) -> Path:
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_the_manifests_ca_cert_cannot_make_another_server_trusted(
    cli: Cli, tls_attacker: tuple[Attacker, Path], prefix: str, tmp_path: Path
) -> None:
    attacker, evil_ca = tls_attacker
    token = "hvs.the-pipelines-vault-token"
    cli.env.update(
        VAULT_ADDR=f"https://127.0.0.1:{attacker.server_address[1]}",
        VAULT_CACERT=str(write_ca(tmp_path / "corp-ca.pem")),
        VAULT_TOKEN=token,
    )
    cli.write_manifest(vault_manifest(prefix).replace("  path:", f"  ca_cert: {evil_ca}\n  path:"))

    for run in (cli("plan"), cli("apply", "--auto-approve")):
        line = one_error_line(run)
        assert "TLS failure" in line and token not in line
    assert attacker.seen == []  # the handshake failed: no request, no token


def test_vault_cacert_beats_sink_ca_cert_and_plan_says_so(
    cli: Cli, bao: Bao, prefix: str, tmp_path: Path
) -> None:
    corp_ca = write_ca(tmp_path / "corp-ca.pem")
    write_ca(tmp_path / "other-ca.pem")  # the manifest's, a valid CA that must not be the one used
    cli.env.update(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token, VAULT_CACERT=str(corp_ca))
    cli.write_manifest(vault_manifest(prefix).replace("  path:", "  ca_cert: other-ca.pem\n  path:"))

    plan = cli("plan", "--format", "json")
    warning = f"VAULT_CACERT ({corp_ca}) overrides the manifest's sink.ca_cert (other-ca.pem)"
    assert plan.code == 0 and any(warning in w for w in json.loads(plan.stdout)["warnings"]), plan

    cli.write_manifest(vault_manifest(prefix).replace("  path:", f"  ca_cert: {corp_ca}\n  path:"))
    same = cli("plan", "--format", "json")
    assert same.code == 0 and not any("VAULT_CACERT" in w for w in json.loads(same.stdout)["warnings"])
    assert cli("apply", "--auto-approve").code == 0
    assert vault_entries(bao, prefix) == ["alpha", "beta"]
