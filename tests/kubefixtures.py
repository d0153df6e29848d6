"""Fixtures for the kubernetes sink's tests: an emulator per test, and sinks opened on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysync.keys import SecretRecord
from keysync.manifest.sinks import KubernetesSinkConfig
from keysync.sinks.base import SinkContext
from keysync.sinks.kubernetes import KubernetesSink

from conftest import random_record
from kubeemu import KubeEmu
from kubeemu.server import Fault
from kubeemu.status import StatusError

NS = "coder-ai-gateway"
URL = "http://127.0.0.1:7080"
Make = Callable[..., KubernetesSink]


@pytest.fixture(name="emu")
def emu_fixture() -> Iterator[KubeEmu]:
    with KubeEmu() as server:
        server.namespace(NS)
        yield server


@pytest.fixture(name="make")
def make_fixture(emu: KubeEmu, tmp_path: Path) -> Iterator[Make]:
    """Opens sinks on the emulator; `env` entries and settings override the defaults."""
    opened: list[KubernetesSink] = []

    def make(
        env: dict[str, str] | None = None, url: str = URL, force: bool = False, **settings: Any
    ) -> KubernetesSink:
        environment = {"HOME": str(tmp_path), **(env or {})}
        if "KUBECONFIG" not in environment and "kubeconfig" not in settings:
            environment["KUBECONFIG"] = str(emu.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
        config = KubernetesSinkConfig.model_validate({"type": "kubernetes", **settings})
        sink = KubernetesSink(config, SinkContext(tmp_path, url, environment, timeout=5, force=force))
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def record(name: str, url: str = URL) -> SecretRecord:
    return random_record(name, url)


def renewals_fail_fast_then_hang(emu: KubeEmu) -> Fault:
    """The next Lease update is refused at once (503); the one after it gets no answer until the
    returned hold's gate is set (a request stuck on the network)."""
    emu.fail("PUT", "/leases/", lambda: StatusError(503, "ServiceUnavailable", "etcd is down"))
    return emu.hold("PUT", "/leases/")
