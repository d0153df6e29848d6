"""Deployments, StatefulSets and DaemonSets whose rollouts take time (one step per read of the
workload) and can stall or fail, as the controllers would report them in `status`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from kubeemu.status import Resource

DEPLOYMENTS = Resource("deployments", "apps", "Deployment")
STATEFULSETS = Resource("statefulsets", "apps", "StatefulSet")
DAEMONSETS = Resource("daemonsets", "apps", "DaemonSet")
WORKLOADS = {r.plural: r for r in (DEPLOYMENTS, STATEFULSETS, DAEMONSETS)}
Behaviour = Literal["progress", "stall", "fail"]


@dataclass
class Rollout:
    """How the controller answers a changed pod template: each read of the workload shows the
    next status of `steps`; `stall` stops after the spec is observed; `fail` then reports
    ProgressDeadlineExceeded (Deployments)."""

    behaviour: Behaviour = "progress"
    steps: deque[dict[str, Any]] = field(default_factory=deque)
    restarts: list[str] = field(default_factory=list)


def new_workload(resource: Resource, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "gw"}]}},
    }
    if resource is not DAEMONSETS:
        spec["replicas"] = replicas
    if resource is not DEPLOYMENTS:
        spec["updateStrategy"] = {"type": "RollingUpdate"}
    obj = {
        "apiVersion": "apps/v1",
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec,
    }
    obj["status"] = settled(resource, obj, replicas, "rev-1")
    return obj


def settled(resource: Resource, obj: dict[str, Any], replicas: int, revision: str) -> dict[str, Any]:
    generation = obj["metadata"]["generation"]
    if resource is DAEMONSETS:
        return {
            "observedGeneration": generation,
            "desiredNumberScheduled": replicas,
            "updatedNumberScheduled": replicas,
            "numberAvailable": replicas,
            "numberReady": replicas,
        }
    if resource is STATEFULSETS:
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "currentReplicas": replicas,
            "availableReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
        }
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [_progressing("True", "NewReplicaSetAvailable")],
    }


def rollout_steps(resource: Resource, obj: dict[str, Any], behaviour: Behaviour) -> list[dict[str, Any]]:
    """The statuses a controller reports, one after another, once the template changed."""
    generation = obj["metadata"]["generation"]
    before = dict(obj["status"])
    replicas = _replicas(resource, obj)
    revision = f"rev-{generation}"
    observed = {**before, "observedGeneration": generation}
    if resource is DEPLOYMENTS:
        observed["updatedReplicas"] = 0
        observed["conditions"] = [_progressing("True", "ReplicaSetUpdated")]
    elif resource is STATEFULSETS:
        observed.update(updateRevision=revision, updatedReplicas=0)
    else:
        observed["updatedNumberScheduled"] = 0
    if behaviour == "stall":
        return [observed]
    if behaviour == "fail":
        failed = {**observed, "conditions": [_progressing("False", "ProgressDeadlineExceeded")]}
        return [observed, failed]
    return [observed, *_middle(resource, observed, replicas), settled(resource, obj, replicas, revision)]


def _middle(resource: Resource, observed: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    steps = []
    for done in range(1, replicas + 1):
        if resource is DEPLOYMENTS:
            steps.append(
                {**observed, "replicas": replicas + 1, "updatedReplicas": done, "availableReplicas": done - 1}
            )
        elif resource is STATEFULSETS:
            steps.append({**observed, "updatedReplicas": done, "readyReplicas": replicas - 1})
        else:
            steps.append({**observed, "updatedNumberScheduled": done, "numberAvailable": done - 1})
    if resource is DEPLOYMENTS:
        steps.append(
            {**observed, "replicas": replicas + 1, "updatedReplicas": replicas, "availableReplicas": replicas}
        )
    return steps


def _replicas(resource: Resource, obj: dict[str, Any]) -> int:
    if resource is DAEMONSETS:
        return int(obj["status"].get("desiredNumberScheduled", 1))
    return int(obj["spec"].get("replicas", 1))


def _progressing(state: str, reason: str) -> dict[str, str]:
    return {"type": "Progressing", "status": state, "reason": reason}


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Maps merge key by key and null deletes: all a restart's annotation patch needs."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = strategic_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
