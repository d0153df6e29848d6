"""Carries out a plan: bounded parallelism, secrets durable before a create counts as done.

The Coder API and the sink come in as small protocols, so this module does no I/O of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keysync.errors import ApiError, KeysyncError, OutcomeUnknownError, SinkError, SinkRefusedError
from keysync.keys import CreatedKey, LiveKey, SecretRecord
from keysync.outcomes import ApplyReport, Outcome
from keysync.plan import Action, Plan

_CREATE_ATTEMPTS = 3


class KeyApi(Protocol):
    def list_keys(self) -> list[LiveKey]: ...

    def create_key(self, name: str) -> CreatedKey: ...

    def delete_key(self, key_id: str) -> bool: ...


class SecretStore(Protocol):
    def store(self, record: SecretRecord) -> None: ...

    def remove(self, name: str, key_id: str = "") -> None: ...


@dataclass
class _Shift:
    """What the worker threads of one apply share."""

    pending: Iterator[Action]
    report: ApplyReport
    taking: threading.Lock = field(default_factory=threading.Lock)
    reporting: threading.Lock = field(default_factory=threading.Lock)
    failures: list[BaseException] = field(default_factory=list)
    # Set by the first failed sink write: a sink that lost one secret would lose the next one too,
    # and every replace started after it would destroy a working key for nothing.
    halted: threading.Event = field(default_factory=threading.Event)

    def halt(self, error: SinkError) -> None:
        with self.reporting:
            if self.report.sink_failure is None:
                self.report.sink_failure = str(error)
        self.halted.set()


class Applier:
    def __init__(
        self,
        api: KeyApi,
        sink: SecretStore,
        coderd_url: str,
        parallelism: int = 10,
        stop: threading.Event | None = None,
        on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    ) -> None:
        self._api = api
        self._sink = sink
        self._url = coderd_url
        self._parallelism = max(1, parallelism)
        # `parallelism` bounds the requests to Coder; a few more actions may be in flight, so that
        # those waiting for their secret's fsync do not hold a request slot. Not many more: every
        # extra thread contends for the interpreter.
        self._slots = threading.BoundedSemaphore(self._parallelism)
        self._in_flight_limit = self._parallelism + max(4, self._parallelism // 4)
        self._stop = stop or threading.Event()
        self._on_outcome = on_outcome

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        actions = self._prepared(plan.actions, report)
        shift = _Shift(iter(actions), report)
        workers = [
            threading.Thread(target=self._work, args=(shift,), name=f"keysync-apply-{i}", daemon=True)
            for i in range(min(self._in_flight_limit, len(actions)))
        ]
        try:
            for worker in workers:
                worker.start()
            self._join(workers)
        except BaseException:  # no thread left behind mid-action: stop them, let them finish
            self._stop.set()
            self._join([worker for worker in workers if worker.ident is not None])
            raise
        if shift.failures:
            raise shift.failures[0]
        report.not_started += list(shift.pending)
        report.interrupted = self._stop.is_set()
        if not report.interrupted and report.sink_failure is None and plan.stale_records:
            report.cleanup_errors = self._remove_stale(plan.stale_records)
            removed = len(plan.stale_records) - len(report.cleanup_errors)
            if removed:
                report.notes.append(f"removed {removed} stale sink record(s), whose keys no longer exist")
        return report

    def _prepared(self, actions: Sequence[Action], report: ApplyReport) -> list[Action]:
        """The actions to run, once the sink has seen them all (`prepare`, for sinks that have it:
        it records what it needs and refuses the keys it will not take, before any is touched)."""
        prepare: Callable[[Sequence[Action]], dict[str, str]] | None = getattr(self._sink, "prepare", None)
        if prepare is None or not actions:
            return list(actions)
        try:
            refused = prepare(actions)
        except SinkError as exc:
            report.sink_failure = str(exc)
            report.not_started += actions
            return []
        for action in actions:
            if action.creates and action.name in refused:
                outcome = Outcome(action, error=refused[action.name])
                report.outcomes.append(outcome)
                self._on_outcome(outcome)
        return [a for a in actions if not (a.creates and a.name in refused)]

    @staticmethod
    def _join(workers: list[threading.Thread]) -> None:
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)  # wakes up to notice an interrupt

    def _work(self, shift: _Shift) -> None:
        """Takes actions until none are left: no thread hands an action or an outcome to another."""
        while not (self._stop.is_set() or shift.halted.is_set()):
            with shift.taking:
                action = next(shift.pending, None)
            if action is None:
                return
            result = self._task(action, shift)
            with shift.reporting:
                if isinstance(result, Action):
                    shift.report.not_started.append(result)
                    continue
                shift.report.outcomes.append(result)
                try:
                    self._on_outcome(result)
                except BaseException as exc:  # raised again in the thread that called apply
                    shift.failures.append(exc)
                    self._stop.set()

    def _task(self, action: Action, shift: _Shift) -> Outcome | Action:
        """Always an answer, so that a bug in one action fails that action, not the apply."""
        try:
            return self._run(action, shift)
        except SinkRefusedError as exc:  # this key only: the sink is fine
            return Outcome(action, error=str(exc))
        except SinkError as exc:
            shift.halt(exc.__cause__ if isinstance(exc.__cause__, SinkError) else exc)
            return Outcome(action, error=str(exc))
        except KeysyncError as exc:
            return Outcome(action, error=str(exc))
        except Exception as exc:
            return Outcome(action, error=f"internal error (a bug, please report it): {type(exc).__name__}")

    def _run(self, action: Action, shift: _Shift) -> Outcome | Action:
        """The outcome of an action, or the action itself when an interrupt or a failed sink
        write came first. Once started, an action runs to its end: a replace whose delete is
        done still creates its successor."""
        with self._slots:
            if self._stop.is_set() or shift.halted.is_set():
                return action
            if action.destroys:
                assert action.live is not None
                self._api.delete_key(action.live.id)
            created = self._create(action.live_name) if action.creates else None
        if created is not None:
            return Outcome(action, created=self._deliver(created, action.name))
        if action.action == "delete":
            self._sink.remove(action.name, action.live.id if action.live else "")
        return Outcome(action)

    def _create(self, live_name: str) -> CreatedKey:
        for _ in range(_CREATE_ATTEMPTS - 1):
            try:
                return self._api.create_key(live_name)
            except OutcomeUnknownError:
                self._resolve_unknown(live_name)
        return self._api.create_key(live_name)

    def _resolve_unknown(self, live_name: str) -> None:
        """A create went out and no answer came back: if the key exists, nobody holds its secret."""
        orphan = next((key for key in self._api.list_keys() if key.name == live_name), None)
        if orphan is not None:
            self._api.delete_key(orphan.id)

    def _deliver(self, created: CreatedKey, name: str) -> LiveKey:
        record = SecretRecord.for_created(created, self._url, name)
        try:
            self._sink.store(record)
        except SinkError as exc:
            kind = SinkRefusedError if isinstance(exc, SinkRefusedError) else SinkError
            # The cause keeps the sink's own words, for the report's one line on why it stopped.
            raise kind(f"{exc}; {self._undo_create(created.live)}") from exc
        return created.live

    def _undo_create(self, live: LiveKey) -> str:
        try:
            self._api.delete_key(live.id)
            return f"key {live.name!r} was deleted again so that no secret is orphaned"
        except ApiError as exc:
            return f"deleting {live.name!r} again failed too ({exc}); the next apply replaces it"

    def _remove_stale(self, names: list[str]) -> list[str]:
        errors = []
        for name in names:
            try:
                self._sink.remove(name)
            except SinkError as exc:
                errors.append(f"removing the stale sink record {name!r}: {exc}")
        return errors
