"""A kubeconfig that a pull request adds and the manifest names (`sink.kubeconfig`, KUBECONFIG
unset) is as untrusted as the manifest: keysync never runs its exec plugin, and reads its token
or client-key files only when KEYSYNC_ALLOWED_HOSTS pins its server. Its inline token is the
manifest's own. The emulator stands where the file points and must see no request."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from attackers import hostport, one_error_line

from keysync.devserver import DevServer

from conftest import Cli
from kubeemu import KubeEmu
from kubefixtures import NS, emu_fixture

__all__ = ["emu_fixture"]

PLUGIN = """#!{python}
import json, os
open({marker!r}, "a").write("ran\\n")
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
status = {{"token": "plugin-token"}}
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""
MANIFEST = "version: 1\nsink:\n  type: kubernetes\n  kubeconfig: {file}\nkeys: [alpha]\n"


@pytest.fixture
def repo(cli: Cli, tmp_path: Path) -> Cli:
    """The CLI in a checkout, KUBECONFIG unset and an empty HOME (no ~/.kube/config)."""
    cli.env.pop("KUBECONFIG", None)
    cli.env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    return cli


def exec_user(directory: Path, marker: Path) -> dict[str, object]:
    """A user whose exec plugin, beside its kubeconfig, leaves `marker` when it runs."""
    script = directory / "plugin"
    directory.mkdir(parents=True, exist_ok=True)
    script.write_text(PLUGIN.format(python=sys.executable, marker=str(marker)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "./plugin"}}


def assert_untouched(cli: Cli, emu: KubeEmu, *secrets: str) -> None:
    assert emu.seen == []
    for run in cli.runs:
        assert not any(secret in run.stdout + run.stderr for secret in secrets), run


def test_plan_never_runs_the_exec_plugin_of_a_kubeconfig_the_manifest_chose(
    repo: Cli, emu: KubeEmu, tmp_path: Path
) -> None:
    emu.add_user("cloud", "plugin-token")
    user = exec_user(tmp_path / "kube", tmp_path / "plugin-ran")
    config = emu.kubeconfig(tmp_path / "kube" / "config", namespace=NS, user=user)
    repo.write_manifest(MANIFEST.format(file="kube/config"))
    repo.env["KEYSYNC_ALLOWED_HOSTS"] = f"{hostport(emu.url)},127.0.0.1"  # pinning does not make it run

    for command in (["plan"], ["status"], ["apply", "--auto-approve"]):
        line = one_error_line(repo(*command))
        assert f"kubeconfig {config} (the manifest's sink.kubeconfig" in line
        assert "does not run the exec credential plugin" in line and f"set KUBECONFIG={config}" in line
    assert not (tmp_path / "plugin-ran").exists()
    assert_untouched(repo, emu)

    repo.env["KUBECONFIG"] = str(config)  # the environment chose it: used as kubectl would
    assert repo("plan").code == 0
    assert (tmp_path / "plugin-ran").exists()


def test_the_manifest_naming_the_default_kubeconfig_chooses_nothing(
    repo: Cli, emu: KubeEmu, tmp_path: Path
) -> None:
    emu.add_user("cloud", "plugin-token")
    home_kube = tmp_path / "home" / ".kube"
    user = exec_user(home_kube, tmp_path / "plugin-ran")
    emu.kubeconfig(home_kube / "config", namespace=NS, user=user)
    repo.write_manifest(MANIFEST.format(file="~/.kube/config"))

    run = repo("plan")

    assert run.code == 0, run
    assert (tmp_path / "plugin-ran").exists()


@pytest.mark.parametrize("setting", ["tokenFile", "client-key"])
def test_a_credential_file_of_a_kubeconfig_the_manifest_chose_is_not_read(
    repo: Cli, emu: KubeEmu, dev_server: DevServer, tmp_path: Path, setting: str
) -> None:
    stolen = tmp_path / "coder-session-token"
    stolen.write_text(dev_server.token + "\n")
    user = {setting: str(stolen)}
    if setting == "client-key":
        user["client-certificate-data"] = "Y2VydA=="
    (tmp_path / "kube").mkdir()
    config = emu.kubeconfig(tmp_path / "kube" / "config", namespace=NS, user=user)
    repo.write_manifest(MANIFEST.format(file="kube/config"))

    for command in (["plan", "--format", "markdown"], ["apply", "--auto-approve"]):
        line = one_error_line(repo(*command))
        assert f"kubeconfig {config} (the manifest's sink.kubeconfig" in line
        assert f"its {setting} is read only when the environment names the cluster" in line
        assert f"set KUBECONFIG={config} instead (or KEYSYNC_ALLOWED_HOSTS to allow {emu.url})" in line
    repo.env["KEYSYNC_ALLOWED_HOSTS"] = f"{hostport(dev_server.url)},kube.example.com"
    line = one_error_line(repo("plan"))
    assert f"KEYSYNC_ALLOWED_HOSTS does not allow {hostport(emu.url)}" in line
    assert_untouched(repo, emu, dev_server.token)


def test_a_token_file_is_read_when_allowed_hosts_pin_the_server(
    repo: Cli, emu: KubeEmu, dev_server: DevServer, tmp_path: Path
) -> None:
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "token").write_text(emu.token)
    emu.kubeconfig(tmp_path / "kube" / "config", namespace=NS, user={"tokenFile": "token"})
    repo.write_manifest(MANIFEST.format(file="kube/config"))
    repo.env["KEYSYNC_ALLOWED_HOSTS"] = f"{hostport(dev_server.url)},{hostport(emu.url)}"

    run = repo("apply", "--auto-approve")

    assert run.code == 0, run
    assert emu.secret_value(NS, "alpha") is not None


def test_an_inline_token_is_the_manifests_own(repo: Cli, emu: KubeEmu, tmp_path: Path) -> None:
    (tmp_path / "kube").mkdir()
    emu.kubeconfig(tmp_path / "kube" / "config", namespace=NS)
    repo.write_manifest(MANIFEST.format(file="kube/config"))

    plan = repo("plan", "--format", "json")
    applied = repo("apply", "--auto-approve")

    assert plan.code == 0 and [a["name"] for a in json.loads(plan.stdout)["actions"]] == ["alpha"], plan
    assert applied.code == 0, applied
    assert emu.secret_value(NS, "alpha") is not None
