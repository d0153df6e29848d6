"""The `kubernetes` sink: one Secret per key, written optimistically (an update carries the
resourceVersion it read, so a concurrent writer is reported, never overwritten), a Secret that
keysync did not write left alone unless --force adopts it, an access review before the first
change, and the workloads that read a key rolled once its Secret changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

from keysync.duration import parse_duration
from keysync.errors import SinkError
from keysync.hosts import env_endpoint
from keysync.keys import LiveKey, SecretRecord, SinkView
from keysync.manifest.sinks import KubernetesSinkConfig
from keysync.plan import Action, Plan
from keysync.sinks.base import SinkContext
from keysync.sinks.kubernetes import access
from keysync.sinks.kubernetes.api import KubeApi
from keysync.sinks.kubernetes.kubeconfig import load_access
from keysync.sinks.kubernetes.lease import DEFAULT_DURATION, HeldLease, Lease, Renewer, held, lease_name
from keysync.sinks.kubernetes.rollout import Roller, Target, targets
from keysync.sinks.kubernetes.secretstore import Secrets
from keysync.sinks.kubernetes.shape import SecretShape

_READ_THREADS = 8


class KubernetesSink:
    concurrent_writes = True
    config_model = KubernetesSinkConfig

    def __init__(self, config: KubernetesSinkConfig, context: SinkContext) -> None:
        self._config = config
        self._url = context.coderd_url
        self._force = bool(getattr(context, "force", False))
        self._shape = SecretShape(config.secret_name, config.data_key, dict(config.labels))
        configured = context.resolve(config.kubeconfig) if config.kubeconfig else None
        self.endpoint_warnings = _source_warnings(context, config.kubeconfig)  # plan shows them
        found = load_access(context.env, configured, config.context)
        if found.insecure:
            self.endpoint_warnings.append(
                f"kubernetes {found.server}: insecure-skip-tls-verify is set ({found.where}): the API "
                "server's certificate is not checked"
            )
        self.namespace = config.namespace or found.namespace or "default"
        self._api = KubeApi(found, context.env, context.timeout)
        self._rollout_timeout = parse_duration(config.rollout_timeout).total_seconds()
        self._secrets = Secrets(self._api, self.namespace, self._shape, self._url, self._force)
        self.lock_duration = DEFAULT_DURATION
        self._renewer: Renewer | None = None
        self._reviewed: list[access.Permission] | None = None
        self._planned: list[str] = []

    # --- the Sink protocol -----------------------------------------------------------------------

    def describe(self) -> str:
        return f"kubernetes {self._api.server} namespace {self.namespace} secrets {self._config.secret_name}"

    def local_paths(self) -> list[Path]:
        return []

    def lock(self, timeout: float | None) -> AbstractContextManager[object]:
        """A Lease in the namespace, renewed while the apply runs."""
        return self._locked(timeout)

    @contextmanager
    def _locked(self, timeout: float | None) -> Iterator[Renewer]:
        with held(self.lease(self.lock_duration), timeout) as renewer:
            self._renewer = renewer
            try:
                yield renewer
            finally:
                self._renewer = None

    def _still_locked(self) -> None:
        """A lock lost mid-apply (it could not be renewed) stops the writes: another apply may
        hold it by now. The failed write stops the apply from starting more."""
        if self._renewer is not None:
            where = (
                f"kubernetes {self._api.server}: the sink's lock, Lease {self.namespace}/{self.lease_name},"
            )
            self._renewer.raise_if_lost(where)

    def lease(self, duration: float = DEFAULT_DURATION) -> Lease:
        return Lease(self._api, self.namespace, self.lease_name, duration)

    def leader_lock(self, duration: float, on_lost: Callable[[], None]) -> HeldLease:
        """The lock for `watch --leader-elect`: held across rounds by the replica that leads."""
        return HeldLease(self.lease(duration), on_lost)

    def read(self) -> SinkView:
        return self._secrets.read()

    def check_writable(self) -> None:
        self.check_ready()

    def check_ready(self) -> None:
        """The access review: read-only, so plan runs it too."""
        missing = self._missing_permissions(self._planned)
        if missing:
            raise SinkError(self._denied(missing))

    def prepare(self, actions: Sequence[Action]) -> dict[str, str]:
        """Before any key is touched: the keys whose Secret keysync may not write, and why."""
        return self._secrets.refusals(sorted({a.name for a in actions if a.creates}))

    def store(self, record: SecretRecord) -> None:
        self._still_locked()
        self._secrets.store(record)

    def remove(self, name: str, key_id: str = "") -> None:
        self._still_locked()
        self._secrets.remove(name)

    def close(self) -> None:
        self._api.close()

    # --- optional hooks: the plan's review, and the rollouts after an apply ------------------------

    def review_plan(self, plan: Plan, live: Sequence[LiveKey] = ()) -> Plan:
        """Adds what only this sink can know: Secrets keysync did not write (apply refuses those
        keys unless --force adopts them), the workloads apply will roll, where the credentials
        came from."""
        written = sorted({a.name for a in plan.actions if a.creates})
        self._planned = written
        secrets = self._secrets.review(written)
        rolls = self._roll_notes(self._targets(written))
        actions, held = self._unadopted_retires(plan.actions, live)
        if not (secrets.notes or secrets.guards or secrets.failures or rolls or held):
            return plan
        reviewed = replace(
            plan,
            actions=actions,
            warnings=[*plan.warnings, *secrets.notes],
            failures=[*plan.failures, *secrets.failures],
        ).holding_back(secrets.guards)
        return replace(reviewed, warnings=[*reviewed.warnings, *rolls, *held])

    def after_apply(self, written: list[str]) -> list[tuple[str, bool]]:
        """Rolls every restart target of the keys whose secret changed; (line, ok) per target."""
        wanted = self._targets(written)
        return Roller(self._api, self.namespace, self._rollout_timeout).roll(wanted) if wanted else []

    # --- helpers -----------------------------------------------------------------------------------

    def _unadopted_retires(
        self, actions: list[Action], live: Sequence[LiveKey]
    ) -> tuple[list[Action], list[str]]:
        """Retires held back while no replica has used the generation the Secret holds: the
        rolled pods may not be reaching Coder, and the old key is what still works."""
        if not self._config.restart or self._force:
            return actions, []
        by_id = {key.id: key for key in live}
        kept, warnings = [], []
        for action in actions:
            entry = self._secrets.entries.get(action.name)
            newest = by_id.get(entry.id) if entry else None
            old = action.live
            if action.reason == "superseded" and old and old.last_seen and newest and not newest.last_seen:
                warnings.append(
                    f"{action.name!r}: no replica has used its new generation {newest.name} since its "
                    f"Secret was written and its workloads rolled (are the new pods reaching Coder?): "
                    f"the previous generation {old.name} is kept until one does (apply --force retires it)"
                )
                continue
            kept.append(action)
        return kept, warnings

    def _roll_notes(self, wanted: list[Target]) -> list[str]:
        roller = Roller(self._api, self.namespace, self._rollout_timeout)
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="keysync-kube-read") as pool:
            present = list(pool.map(roller.exists, wanted))
        return [
            f"apply rolls {target} once the Secrets are written"
            if found
            else f"{target} does not exist in namespace {self.namespace!r}: apply will not roll it"
            for target, found in zip(wanted, present, strict=True)
        ]

    def _targets(self, names: Iterable[str]) -> list[Target]:
        return targets(self._config.restart, names)

    def _missing_permissions(self, written: list[str]) -> list[access.Permission]:
        if self._reviewed is None:
            workloads = [(t.resource, t.name) for t in self._targets(written)]
            self._reviewed = access.missing(
                self._api, self.namespace, access.needed(self.lease_name, workloads)
            )
        return self._reviewed

    def _denied(self, missing: list[access.Permission]) -> str:
        return (
            f"kubernetes {self._api.server}: the credentials ({self._api.where}) may not "
            f"{access.describe(missing)} in namespace {self.namespace!r}: grant these verbs "
            "in a Role bound to them (see examples/kubernetes/role.yaml)"
        )

    @property
    def lease_name(self) -> str:
        return lease_name(self._url, self._config.secret_name)


def _source_warnings(context: SinkContext, configured: str | None) -> list[str]:
    purpose = "the Kubernetes credentials are read from the files KUBECONFIG lists"
    endpoint = env_endpoint(context.env, "KUBECONFIG", "sink.kubeconfig", configured, purpose)
    return [endpoint.warning] if endpoint is not None and endpoint.warning else []
