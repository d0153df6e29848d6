"""`keysync` end to end with a kubernetes sink: the installed CLI, the dev server as Coder and the
emulator as the cluster, the kubeconfig pointing at it as a user's would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keysync.devserver import DevServer

from coderlive import delete_out_of_band, live_keys
from conftest import Cli
from kubeemu import KubeEmu, Rule
from kubefixtures import NS, emu_fixture

__all__ = ["emu_fixture"]


def manifest(keys: list[str], **sink: object) -> str:
    settings = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in sink.items())
    return f"version: 1\nsink:\n  type: kubernetes\n{settings}keys: {json.dumps(keys)}\n"


@pytest.fixture
def kube(cli: Cli, emu: KubeEmu, tmp_path: Path) -> Cli:
    cli.env["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    return cli


def plan_actions(cli: Cli) -> list[tuple[str, str, str]]:
    run = cli("plan", "--format", "json")
    assert run.code == 0, run
    return [(a["action"], a["name"], a["reason"]) for a in json.loads(run.stdout)["actions"]]


def assert_no_token_shown(cli: Cli, *tokens: str) -> None:
    for run in cli.runs:
        for token in tokens:
            assert token not in run.stdout + run.stderr, run


def test_apply_writes_secrets_and_plan_reads_them_back(
    kube: Cli, emu: KubeEmu, dev_server: DevServer
) -> None:
    kube.write_manifest(manifest(["alpha", "beta"], labels={"team": "platform"}))
    run = kube("apply", "--auto-approve")
    assert run.code == 0, run

    keys = live_keys(dev_server)
    for name in ("alpha", "beta"):
        secret = emu.secret(NS, name)
        assert secret is not None
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "keysync"
        assert secret["metadata"]["annotations"]["keysync/key-prefix"] == keys[name]["key_prefix"]
        value = emu.secret_value(NS, name)
        assert value is not None and value[:11] == keys[name]["key_prefix"] and not value.endswith("\n")
    again = kube("apply", "--auto-approve")
    assert again.code == 0 and "No changes" in again.stdout, again

    emu.put_secret(NS, "alpha", {"key": "sk-edited-by-hand-000000"})
    emu.delete_secret(NS, "beta")
    assert plan_actions(kube) == [("replace", "alpha", "secret-stale"), ("replace", "beta", "secret-missing")]
    assert kube("apply", "--auto-approve").code == 0
    assert plan_actions(kube) == []
    assert_no_token_shown(kube, emu.token, dev_server.token)


def test_a_secret_keysync_did_not_write_is_refused_until_forced(
    kube: Cli, emu: KubeEmu, dev_server: DevServer
) -> None:
    emu.put_secret(NS, "alpha", {"key": "made-by-hand"})
    kube.write_manifest(manifest(["alpha", "beta"]))

    plan = kube("plan")
    assert plan.code == 0, plan
    assert f"needs --force: Secret {NS}/alpha exists and keysync did not write it" in plan.stdout
    document = json.loads(kube("plan", "--format", "json").stdout)
    assert document["applyable"] is False  # a pipeline's gate sees it before the merge
    assert [(g["code"], g["names"]) for g in document["needs_force"]] == [("foreign-secret", ["alpha"])]
    refused = kube("apply", "--auto-approve")
    assert refused.code == 1, refused
    assert "--force adopts it" in refused.stdout + refused.stderr
    assert live_keys(dev_server) == {}  # refused as a whole, as every guard refuses, before any key
    assert emu.secret_value(NS, "alpha") == "made-by-hand"

    forced = kube("apply", "--auto-approve", "--force")
    assert forced.code == 0, forced
    value = emu.secret_value(NS, "alpha")
    assert value is not None and value[:11] == live_keys(dev_server)["alpha"]["key_prefix"]


def test_a_denied_access_review_names_the_verbs_and_creates_no_key(
    kube: Cli, emu: KubeEmu, dev_server: DevServer, tmp_path: Path
) -> None:
    emu.add_user("ci", "ci-token", Rule.of("get,list,create", "secrets", ""), Rule.of("*", "leases"))
    kube.env["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "ci", token="ci-token", namespace=NS))
    kube.write_manifest(manifest(["alpha"], restart=["deployment/gw-{name}"], kubeconfig="elsewhere/config"))

    plan = kube("plan")
    apply = kube("apply", "--auto-approve")

    assert "KUBECONFIG (" in plan.stdout and "overrides the manifest's sink.kubeconfig" in plan.stdout, plan

    for run in (plan, apply):
        assert run.code == 1, run
        assert "may not update, delete secrets; get, patch deployments.apps (gw-alpha) in" in run.stderr
    assert live_keys(dev_server) == {}
    assert_no_token_shown(kube, "ci-token")


def test_a_conflict_during_apply_is_a_failed_delivery(kube: Cli, emu: KubeEmu, dev_server: DevServer) -> None:
    kube.write_manifest(manifest(["alpha"]))
    assert kube("apply", "--auto-approve").code == 0

    def someone_writes_first(method: str, path: str) -> None:
        if method == "PUT" and path.endswith("/secrets/alpha"):
            emu.on_request = None
            emu.put_secret(
                NS,
                "alpha",
                {"key": "sk-the-other-writer-000"},
                labels={"app.kubernetes.io/managed-by": "keysync"},
            )

    emu.on_request = someone_writes_first
    run = kube("apply", "--auto-approve", "--replace", "alpha")

    assert run.code == 1, run
    assert "Operation cannot be fulfilled on secrets" in run.stdout + run.stderr
    assert "was deleted again" in run.stdout + run.stderr
    assert live_keys(dev_server) == {}
    assert emu.secret_value(NS, "alpha") == "sk-the-other-writer-000"


def test_apply_rolls_each_restart_target_once_and_reports_it(kube: Cli, emu: KubeEmu) -> None:
    alpha = emu.workload(NS, "gw-alpha")
    shared = emu.workload(NS, "gw-shared")
    kube.write_manifest(manifest(["alpha", "beta"], restart=["deployment/gw-{name}", "deployment/gw-shared"]))

    plan = kube("plan")
    assert "apply rolls deployment/gw-alpha once the Secrets are written" in plan.stdout
    run = kube("apply", "--auto-approve", "--format", "json")

    assert run.code == 0, run
    notes = json.loads(run.stdout)["notes"]
    assert any(
        n.startswith('rolled deployment/gw-alpha: deployment "gw-alpha" successfully rolled out')
        for n in notes
    )
    assert any(n.startswith("warning: deployment/gw-beta not found") for n in notes)
    assert len(alpha.restarts) == 1 and len(shared.restarts) == 1
    second = kube("apply", "--auto-approve")
    assert second.code == 0 and len(alpha.restarts) == 1, second


def test_a_failed_rollout_fails_the_apply_and_keeps_the_secrets(kube: Cli, emu: KubeEmu) -> None:
    emu.workload(NS, "gw-alpha", behaviour="fail")
    emu.workload(NS, "gw-beta", behaviour="stall")
    kube.write_manifest(manifest(["alpha", "beta"], restart=["deployment/gw-{name}"], rollout_timeout="1s"))

    run = kube("apply", "--auto-approve")

    assert run.code == 1, run
    assert (
        'rollout of deployment/gw-alpha failed: deployment "gw-alpha" exceeded its progress deadline'
        in run.stdout
    )
    assert "rollout of deployment/gw-beta did not finish within 1s" in run.stdout
    assert emu.secret(NS, "alpha") is not None and emu.secret(NS, "beta") is not None
    assert plan_actions(kube) == []


def test_an_exec_plugin_provides_the_token_and_its_failure_is_one_line(
    kube: Cli, emu: KubeEmu, tmp_path: Path
) -> None:
    import stat
    import sys

    plugin = tmp_path / "plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "if os.environ.get('BROKEN'):\n"
        "    print('plugin: please log in again', file=sys.stderr); sys.exit(2)\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',"
        " 'status': {'token': 'plugin-Token-0123456789abcdefXYZ'}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    emu.add_user("cloud", "plugin-Token-0123456789abcdefXYZ")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "./plugin",
            "interactiveMode": "Never",
        }
    }
    kube.env["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "exec-config", namespace=NS, user=user))
    kube.write_manifest(manifest(["alpha"]))

    assert kube("apply", "--auto-approve").code == 0
    assert emu.secret(NS, "alpha") is not None
    kube.env["BROKEN"] = "1"
    broken = kube("plan")
    assert broken.code == 1
    assert "plugin: please log in again" in broken.stderr  # the plugin's own stderr passes through
    assert broken.stderr.strip().endswith("exec plugin plugin failed with exit code 2")
    assert "Traceback" not in broken.stderr
    assert_no_token_shown(kube, "plugin-Token-0123456789abcdefXYZ")


def test_a_second_apply_fails_at_once_naming_the_lock_holder(kube: Cli, emu: KubeEmu) -> None:
    from keysync.manifest.sinks import KubernetesSinkConfig
    from keysync.sinks.base import SinkContext
    from keysync.sinks.kubernetes import KubernetesSink

    kube.write_manifest(manifest(["alpha"]))
    context = SinkContext(kube.cwd, kube.env["CODER_URL"], {"KUBECONFIG": kube.env["KUBECONFIG"]})
    other = KubernetesSink(KubernetesSinkConfig(), context)
    lease = other.lease()
    lease.identity = "777@ci-runner-2"
    try:
        assert lease.try_acquire()
        run = kube("apply", "--auto-approve")
        assert run.code == 1, run
        assert f"Lease {NS}/{other.lease_name}, is held by 777@ci-runner-2 since 20" in run.stderr
        lease.release()
        assert kube("apply", "--auto-approve").code == 0
    finally:
        other.close()


def test_deletes_remove_secrets_and_stale_ones_are_cleaned_up(
    kube: Cli, emu: KubeEmu, dev_server: DevServer
) -> None:
    kube.write_manifest(manifest(["alpha", "beta"]))
    assert kube("apply", "--auto-approve").code == 0
    kube.write_manifest("version: 1\nsink:\n  type: kubernetes\npolicy:\n  prune: false\nkeys: [alpha]\n")
    delete_out_of_band(dev_server, live_keys(dev_server)["beta"]["id"])

    plan = kube("plan")
    assert "sink holds a record for 'beta', whose key no longer exists" in plan.stdout, plan
    kube.write_manifest(manifest([]))
    run = kube("apply", "--auto-approve", "--force")

    assert run.code == 0, run
    assert live_keys(dev_server) == {}
    assert emu.secret(NS, "alpha") is None and emu.secret(NS, "beta") is None


def test_moving_from_a_file_sink_imports_the_held_secrets_without_rotating(
    kube: Cli, emu: KubeEmu, dev_server: DevServer
) -> None:
    kube.write_manifest('version: 1\nsink:\n  type: file\n  path: old.json\nkeys: ["alpha", "beta"]\n')
    assert kube("apply", "--auto-approve").code == 0
    held = json.loads((kube.cwd / "old.json").read_text())["keys"]
    before = {name: key["id"] for name, key in live_keys(dev_server).items()}
    kube.write_manifest(manifest(["alpha", "beta"]))

    for name in ("alpha", "beta"):
        run = kube("import", name, input=held[name]["key"])
        assert run.code == 0, run
    assert plan_actions(kube) == []
    assert {name: key["id"] for name, key in live_keys(dev_server).items()} == before
    assert emu.secret_value(NS, "alpha") == held["alpha"]["key"]
    assert_no_token_shown(kube, held["alpha"]["key"], held["beta"]["key"])


def test_an_interrupt_ends_the_wait_for_rollouts(kube: Cli, emu: KubeEmu) -> None:
    import signal
    import subprocess
    import time

    from conftest import KEYSYNC

    emu.workload(NS, "gw-alpha", behaviour="stall")
    kube.write_manifest(manifest(["alpha"], restart=["deployment/gw-{name}"], rollout_timeout="5m"))
    process = subprocess.Popen(
        [KEYSYNC, "apply", "--auto-approve"],
        cwd=kube.cwd,
        env=kube.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rollout = emu.rollouts[("deployments", NS, "gw-alpha")]
    deadline = time.monotonic() + 30
    while not rollout.restarts and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 130, (out, err)
    assert "rollout of deployment/gw-alpha not waited for: interrupted" in out
    assert emu.secret(NS, "alpha") is not None


def test_two_applies_at_once_the_second_fails_naming_the_first(
    kube: Cli, emu: KubeEmu, dev_server: DevServer
) -> None:
    import subprocess
    import threading

    from conftest import KEYSYNC

    kube.write_manifest(manifest(["alpha", "beta"]))
    writing, go_on = threading.Event(), threading.Event()

    def hold_the_first_write(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/secrets"):
            writing.set()
            go_on.wait(30)

    emu.on_request = hold_the_first_write
    first = subprocess.Popen(
        [KEYSYNC, "apply", "--auto-approve"],
        cwd=kube.cwd,
        env=kube.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writing.wait(30), "the first apply never wrote a Secret"
        second = kube("apply", "--auto-approve")
    finally:
        go_on.set()
        out, err = first.communicate(timeout=60)

    assert first.returncode == 0, (out, err)
    assert second.code == 1, second
    assert f"is held by {first.pid}@" in second.stderr
    assert sorted(live_keys(dev_server)) == ["alpha", "beta"]
    assert all(emu.secret(NS, name) is not None for name in ("alpha", "beta"))


@pytest.mark.parametrize("value", ["999999999d", "0s", "5 minutes"])
def test_a_bad_rollout_timeout_is_a_validation_error_at_load(
    kube: Cli, emu: KubeEmu, dev_server: DevServer, value: str
) -> None:
    kube.write_manifest(manifest(["alpha"], restart=["deployment/gw-{name}"], rollout_timeout=value))

    for run in (kube("plan"), kube("apply", "--auto-approve")):
        assert run.code == 1, run
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "keysync: error: keysync.yaml:5: sink.rollout_timeout: "
        )
        assert repr(value) in lines[0], run
        assert "internal error" not in run.stderr and "Traceback" not in run.stderr, run
    assert live_keys(dev_server) == {}
    assert emu.seen == []
