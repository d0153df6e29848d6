"""Rolling the workloads that read a key's Secret, as `kubectl rollout restart` does, and waiting
for them as `kubectl rollout status` judges them (kubectl's polymorphichelpers/rollout_status.go)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from keysync.errors import SinkError
from keysync.sinks.kubernetes.api import KubeApi
from keysync.transport.deadline import pause, requests_interrupted

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
RESOURCES = {"deployment": "deployments", "statefulset": "statefulsets", "daemonset": "daemonsets"}
FIRST_POLL, LONGEST_POLL = 0.05, 2.0
State = Literal["done", "waiting", "failed"]
_log = logging.getLogger("keysync")


@dataclass(frozen=True)
class Target:
    kind: str  # deployment | statefulset | daemonset
    name: str

    @property
    def resource(self) -> str:
        return RESOURCES[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def targets(templates: Iterable[str], names: Iterable[str]) -> list[Target]:
    """Each workload to roll for the keys `names`, once, in a stable order."""
    found: dict[Target, None] = {}
    for name in names:
        for template in templates:
            kind, _, workload = template.partition("/")
            found[Target(kind, workload.replace("{name}", name))] = None
    return list(found)


@dataclass
class _Rolling:
    target: Target
    message: str = ""
    state: State = "waiting"


class Roller:
    def __init__(self, api: KubeApi, namespace: str, timeout: float) -> None:
        self._api = api
        self._namespace = namespace
        self._timeout = timeout
        self.interrupted = False

    def roll(self, wanted: list[Target]) -> list[tuple[str, bool]]:
        """Restarts each target, waits for all of them; one (line, ok) note per target."""
        notes: list[tuple[str, bool]] = []
        rolling: list[_Rolling] = []
        started = time.monotonic()
        for target in wanted:
            try:
                if self._restart(target):
                    rolling.append(_Rolling(target))
                else:
                    notes.append(
                        (
                            f"warning: {target} not found in namespace {self._namespace!r}: not rolled "
                            "(pods created later read the Secret as they start)",
                            True,
                        )
                    )
            except SinkError as exc:
                notes.append((f"rolling {target}: {exc}; the new Secrets stay written", False))
        self._wait(rolling, started + self._timeout)
        seconds = time.monotonic() - started
        for item in rolling:
            notes.append(_note(item, seconds, self._timeout, self.interrupted))
        return notes

    def exists(self, target: Target) -> bool:
        """Whether the target exists (when it may not be read, the access review says so)."""
        reply = self._api.call("GET", self._path(target), f"reading {target}", allow=(403, 404))
        return reply.status != 404

    def _path(self, target: Target) -> str:
        return f"/apis/apps/v1/namespaces/{self._namespace}/{target.resource}/{target.name}"

    def _restart(self, target: Target) -> bool:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        reply = self._api.call(
            "PATCH",
            self._path(target),
            f"restarting {target}",
            body=patch,
            content_type=STRATEGIC_MERGE,
            allow=(404,),
        )
        return reply.status != 404

    def _wait(self, rolling: list[_Rolling], deadline: float) -> None:
        between = FIRST_POLL
        while True:
            for item in rolling:
                if item.state == "waiting":
                    self._check(item)
            if all(item.state != "waiting" for item in rolling) or time.monotonic() >= deadline:
                return
            pause(min(between, max(0.0, deadline - time.monotonic())))  # an interrupt ends it
            if requests_interrupted():
                self.interrupted = True
                return
            between = min(LONGEST_POLL, between * 1.3)

    def _check(self, item: _Rolling) -> None:
        try:
            reply = self._api.call("GET", self._path(item.target), f"reading {item.target}")
        except SinkError as exc:
            item.state, item.message = "failed", str(exc)
            return
        state, message = judge(item.target.kind, reply.body)
        if message != item.message:
            _log.info("%s: %s", item.target, message)
        item.state, item.message = state, message


def _note(item: _Rolling, seconds: float, timeout: float, interrupted: bool) -> tuple[str, bool]:
    if item.state == "waiting" and interrupted:
        return f"rollout of {item.target} not waited for: interrupted ({item.message})", False
    if item.state == "done":
        return f"rolled {item.target}: {item.message} ({seconds:.0f}s)", True
    if item.state == "failed":
        return f"rollout of {item.target} failed: {item.message}; the new Secrets stay written", False
    return (
        f"rollout of {item.target} did not finish within {timeout:g}s ({item.message}); "
        "the new Secrets stay written",
        False,
    )


def judge(kind: str, obj: dict[str, Any]) -> tuple[State, str]:
    if kind == "deployment":
        return _deployment(obj)
    if kind == "statefulset":
        return _statefulset(obj)
    return _daemonset(obj)


def _parts(obj: dict[str, Any]) -> tuple[str, int, dict[str, Any], dict[str, Any]]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return str(meta.get("name", "")), int(meta.get("generation") or 0), spec, status


def _deployment(obj: dict[str, Any]) -> tuple[State, str]:
    name, generation, spec, status = _parts(obj)
    if generation > int(status.get("observedGeneration") or 0):
        return "waiting", "Waiting for deployment spec update to be observed..."
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f'deployment "{name}" exceeded its progress deadline'
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < replicas:
        return "waiting", f"{waiting}{updated} out of {replicas} new replicas have been updated..."
    if total > updated:
        return "waiting", f"{waiting}{total - updated} old replicas are pending termination..."
    if available < updated:
        return "waiting", f"{waiting}{available} of {updated} updated replicas are available..."
    return "done", f'deployment "{name}" successfully rolled out'


def _statefulset(obj: dict[str, Any]) -> tuple[State, str]:
    _, generation, spec, status = _parts(obj)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return "failed", "rollout status is only available for RollingUpdate strategy type"
    observed = int(status.get("observedGeneration") or 0)
    if observed == 0 or generation > observed:
        return "waiting", "Waiting for statefulset spec update to be observed..."
    replicas = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    if ready < replicas:
        return "waiting", f"Waiting for {replicas - ready} pods to be ready..."
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if partition > 0:
        if updated < replicas - partition:
            return "waiting", (
                f"Waiting for partitioned roll out to finish: {updated} out of {replicas - partition} "
                "new pods have been updated..."
            )
        return "done", f"partitioned roll out complete: {updated} new pods have been updated..."
    if status.get("updateRevision") != status.get("currentRevision"):
        return "waiting", (
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{status.get('updateRevision')}..."
        )
    return "done", (
        f"statefulset rolling update complete {status.get('currentReplicas', 0)} pods at revision "
        f"{status.get('currentRevision')}..."
    )


def _daemonset(obj: dict[str, Any]) -> tuple[State, str]:
    name, generation, spec, status = _parts(obj)
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        return "failed", "rollout status is only available for RollingUpdate strategy type"
    if generation > int(status.get("observedGeneration") or 0):
        return "waiting", "Waiting for daemon set spec update to be observed..."
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    waiting = f'Waiting for daemon set "{name}" rollout to finish: '
    if updated < desired:
        return "waiting", f"{waiting}{updated} out of {desired} new pods have been updated..."
    if available < desired:
        return "waiting", f"{waiting}{available} of {desired} updated pods are available..."
    return "done", f'daemon set "{name}" successfully rolled out'
