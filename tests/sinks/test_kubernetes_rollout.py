"""Rolling the workloads that read a key's Secret, as kubectl rollout restart and status do."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysync.sinks.kubernetes.rollout import RESTARTED_AT, judge

from kubeemu import KubeEmu, Rule
from kubeemu.workloads import DEPLOYMENTS
from kubefixtures import NS, Make, emu_fixture, make_fixture

__all__ = ["emu_fixture", "make_fixture"]
RESTART = ["deployment/gw-{name}"]


def test_each_target_is_restarted_once_and_waited_for(emu: KubeEmu, make: Make) -> None:
    alpha = emu.workload(NS, "gw-alpha", replicas=3)
    beta = emu.workload(NS, "gw-beta")
    notes = make(restart=RESTART).after_apply(["alpha", "beta", "alpha"])
    assert [(line.split(":")[0], ok) for line, ok in notes] == [
        ("rolled deployment/gw-alpha", True),
        ("rolled deployment/gw-beta", True),
    ]
    assert 'deployment "gw-alpha" successfully rolled out' in notes[0][0]
    assert len(alpha.restarts) == 1 and len(beta.restarts) == 1
    deployment = emu.store.peek(DEPLOYMENTS, NS, "gw-alpha")
    assert deployment is not None
    assert deployment["metadata"]["generation"] == 2
    assert RESTARTED_AT in deployment["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("kind", ["statefulsets", "daemonsets"])
def test_statefulsets_and_daemonsets_roll_too(emu: KubeEmu, make: Make, kind: str) -> None:
    emu.workload(NS, "gw-alpha", kind=kind)
    singular = kind.removesuffix("s")
    notes = make(restart=[f"{singular}/gw-{{name}}"]).after_apply(["alpha"])
    assert notes[0][1], notes
    assert notes[0][0].startswith(f"rolled {singular}/gw-alpha: ")


def test_a_failed_rollout_fails_with_kubectls_words(emu: KubeEmu, make: Make) -> None:
    emu.workload(NS, "gw-alpha", behaviour="fail")
    [(line, ok)] = make(restart=RESTART).after_apply(["alpha"])
    assert not ok
    assert line == (
        'rollout of deployment/gw-alpha failed: deployment "gw-alpha" exceeded its progress deadline; '
        "the new Secrets stay written"
    )


def test_a_stalled_rollout_times_out(emu: KubeEmu, make: Make) -> None:
    emu.workload(NS, "gw-alpha", behaviour="stall")
    [(line, ok)] = make(restart=RESTART, rollout_timeout="1s").after_apply(["alpha"])
    assert not ok
    assert line.startswith("rollout of deployment/gw-alpha did not finish within 1s (Waiting for deployment")
    assert "0 out of 2 new replicas have been updated" in line


def test_a_missing_target_is_skipped_with_a_warning(emu: KubeEmu, make: Make) -> None:
    [(line, ok)] = make(restart=RESTART).after_apply(["alpha"])
    assert ok
    assert line.startswith(
        "warning: deployment/gw-alpha not found in namespace 'coder-ai-gateway': not rolled"
    )


def test_a_forbidden_restart_fails_naming_the_verb(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    emu.workload(NS, "gw-alpha")
    emu.add_user("no-patch", "no-patch-token", Rule.of("get", "deployments", "apps"))
    kubeconfig = emu.kubeconfig(tmp_path / "np", token="no-patch-token", namespace=NS)
    [(line, ok)] = make(env={"KUBECONFIG": str(kubeconfig)}, restart=RESTART).after_apply(["alpha"])
    assert not ok
    assert 'User "no-patch" cannot patch resource "deployments" in API group "apps"' in line


def test_nothing_written_rolls_nothing(emu: KubeEmu, make: Make) -> None:
    rollout = emu.workload(NS, "gw-alpha")
    assert make(restart=RESTART).after_apply([]) == []
    assert rollout.restarts == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"observedGeneration": 1}, ("waiting", "Waiting for deployment spec update to be observed...")),
        (
            {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2},
            (
                "waiting",
                'Waiting for deployment "gw" rollout to finish: 1 old replicas are pending termination...',
            ),
        ),
        (
            {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
            (
                "waiting",
                'Waiting for deployment "gw" rollout to finish: 1 of 2 updated replicas are available...',
            ),
        ),
        (
            {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
            ("done", 'deployment "gw" successfully rolled out'),
        ),
    ],
)
def test_deployment_status_is_judged_as_kubectl_does(
    status: dict[str, int], expected: tuple[str, str]
) -> None:
    deployment = {"metadata": {"name": "gw", "generation": 2}, "spec": {"replicas": 2}, "status": status}
    assert judge("deployment", deployment) == expected


def test_an_on_delete_statefulset_cannot_be_waited_for() -> None:
    statefulset = {
        "metadata": {"name": "gw", "generation": 2},
        "spec": {"updateStrategy": {"type": "OnDelete"}},
    }
    assert judge("statefulset", statefulset) == (
        "failed",
        "rollout status is only available for RollingUpdate strategy type",
    )
