"""A rotation with no outage, end to end: git (the manifest) -> Coder (the dev server) -> Secret
(the emulator) -> rolled replicas (the dev server's replica stand-in, reading its key file once at
start, as the gateway does) -> the old key retired once no replica uses it. No replica is ever
refused."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keysync.devserver import DevServer, DevServerConfig

from coderlive import live_keys
from conftest import OWNER_TOKEN, Cli
from kubeemu import KubeEmu
from kubefixtures import NS, emu_fixture
from replica import start_replica, stop_replica

__all__ = ["emu_fixture"]
REPLICAS = 2
MANIFEST = """version: 1
sink:
  type: kubernetes
  restart: ["deployment/gw-{name}"]
policy:
  rotation: overlap
  overlap_grace: 1s
keys: ["alpha"]
"""


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    """The newest generation, whose replicas heartbeat while connected (every 0.2s here)."""
    config = DevServerConfig(port=0, token=OWNER_TOKEN, seed=7, api="ai-gateway-keys", heartbeat_interval=0.2)
    with DevServer(config) as server:
        yield server


class Pods:
    """The gateway Deployment's pods: each rollout starts new replicas with the Secret as it is
    now, then stops the old ones, as a RollingUpdate does."""

    def __init__(self, emu: KubeEmu, url: str, directory: Path) -> None:
        self._emu, self._url, self._directory = emu, url, directory
        self.start_new = True
        self.replicas = REPLICAS
        self.running: list[subprocess.Popen[str]] = []
        self.stopped: list[tuple[int, str]] = []
        self._started = 0

    def roll(self, resource: str, namespace: str, name: str) -> None:
        old, self.running = self.running, []
        if self.start_new:
            key_file = self._directory / f"key-{self._started}"
            key_file.write_text(self._emu.secret_value(namespace, "alpha") or "")
            self.running = [start_replica(self._url, key_file) for _ in range(self.replicas)]
            self._started += 1
        self.stopped += [stop_replica(process) for process in old]

    def stop_all(self) -> None:
        self.stopped += [stop_replica(process) for process in self.running]
        self.running = []


@pytest.fixture
def pods(emu: KubeEmu, dev_server: DevServer, tmp_path: Path) -> Iterator[Pods]:
    emu.workload(NS, "gw-alpha", replicas=REPLICAS)
    group = Pods(emu, dev_server.url, tmp_path)
    emu.on_rollout = group.roll
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def kube(cli: Cli, emu: KubeEmu, tmp_path: Path) -> Cli:
    cli.env["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    cli.write_manifest(MANIFEST)
    return cli


def plan(cli: Cli) -> dict[str, Any]:
    run = cli("plan", "--format", "json")
    assert run.code == 0, run
    document: dict[str, Any] = json.loads(run.stdout)
    return document


def actions(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["action"], a["reason"]) for a in document["actions"]]


def until_planned(cli: Cli, wanted: list[tuple[str, str]], seconds: float = 20) -> list[tuple[str, str]]:
    """The plan's actions once they are `wanted`, or as they are when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        time.sleep(0.3)
        found = actions(plan(cli))
        if found == wanted or time.monotonic() > deadline:
            return found


def test_a_rotation_reaches_every_replica_and_retires_the_old_key_with_none_refused(
    kube: Cli, pods: Pods, dev_server: DevServer
) -> None:
    assert kube("apply", "--auto-approve").code == 0
    assert len(pods.running) == REPLICAS

    rotated = kube("apply", "--auto-approve", "--replace", "alpha")
    assert rotated.code == 0, rotated
    assert "rolled deployment/gw-alpha" in rotated.stdout
    assert sorted(live_keys(dev_server)) == ["alpha", "alpha-r2"]

    # overlap_grace: the old pods stopped heartbeating when the rollout ended them
    assert until_planned(kube, [("retire", "superseded")]) == [("retire", "superseded")]
    assert kube("apply", "--auto-approve").code == 0

    assert sorted(live_keys(dev_server)) == ["alpha-r2"]
    assert all(process.poll() is None for process in pods.running)  # the new pods are still in
    pods.stop_all()
    assert [code for code, _ in pods.stopped] == [0] * (2 * REPLICAS), pods.stopped
    assert actions(plan(kube)) == []


def test_a_new_generation_no_replica_uses_keeps_the_old_one(
    kube: Cli, pods: Pods, dev_server: DevServer
) -> None:
    pods.replicas = 1
    assert kube("apply", "--auto-approve").code == 0
    pods.start_new = False  # the rolled pods never reach Coder (a crash loop, a network policy)
    assert kube("apply", "--auto-approve", "--replace", "alpha").code == 0

    # Once the old generation's grace has passed (its pods stopped heartbeating when the rollout
    # ended them, which a loaded machine may take a while to do), its retire is held back.
    deadline = time.monotonic() + 20
    while True:
        time.sleep(0.3)
        document = plan(kube)
        held = any("no replica has used its new generation alpha-r2" in w for w in document["warnings"])
        if held or time.monotonic() > deadline:
            break
        assert [w["live_name"] for w in document["waiting"]] == ["alpha"], document  # still in grace

    assert held, document
    assert actions(document) == []
    assert sorted(live_keys(dev_server)) == ["alpha", "alpha-r2"]
