"""`keysync watch`: plan (and apply) on a timer, healing drift, reporting to logs and metrics."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from keysync import __version__
from keysync.engine.metrics import WatchMetrics
from keysync.engine.session import Session, Snapshot
from keysync.errors import KeysyncError
from keysync.outcomes import Outcome
from keysync.plan import Plan, PlanRequest

if TYPE_CHECKING:
    from keysync.engine.leadership import Leadership
    from keysync.guards import Guard
    from keysync.plan import Action

FIRST_RETRY_SECONDS = 5.0


Write = Callable[[str], object]  # writes one line (no newline needed); must never raise


class EventLog:
    """One line per round and per action on stderr, as JSON or as text; keysync's own log lines
    (waits, retries) are routed through it too, so stderr stays one format.

    `write` is the CLI's console, which never raises: a log collector that goes away must not
    stop the reconciling or its audit trail. A `stream` is for tests that read the lines."""

    def __init__(self, fmt: str, stream: TextIO | None = None, *, write: Write | None = None) -> None:
        self._fmt = fmt
        self._write = write or _stream_writer(stream or sys.stderr)
        self._lock = threading.Lock()

    def capture_logging(self) -> None:
        log = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                log.emit("log", level=record.levelname.lower(), message=record.getMessage())

        logger = logging.getLogger("keysync")
        logger.handlers = [_Handler()]
        logger.propagate = False

    def emit(self, event: str, **fields: Any) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self._fmt == "json":
            line = json.dumps({"time": now, "event": event, "keysync_version": __version__, **fields})
        else:
            line = f"{now} {event} " + " ".join(f"{k}={v}" for k, v in fields.items())
        with self._lock:
            self._write(line)


def _pending(plan: Plan) -> dict[str, Any]:
    return {"pending": plan.summary(), "warnings": len(plan.warnings)}


def _stream_writer(stream: TextIO) -> Write:
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write


@dataclass(frozen=True)
class WatchSettings:
    interval: float
    apply: bool
    audit_log: Path | None = None
    lock_timeout: float | None = None


class Watcher:
    def __init__(
        self,
        make_session: Callable[[], Session],
        settings: WatchSettings,
        log: EventLog,
        metrics: WatchMetrics | None,
        stop: threading.Event,
        leadership: Leadership | None = None,
    ) -> None:
        self._make_session = make_session
        self._leadership = leadership  # --leader-elect: reconcile only while holding the sink's lock
        if leadership is not None:
            leadership.on_lost = lambda: self._round_stop.set()  # no new action once the lock is lost
        self._settings = settings
        self._log = log
        self._metrics = metrics
        self._stop = stop
        self._round_stop = threading.Event()
        self.fatal: str | None = None

    def interrupt(self) -> None:
        """Stops after the round in flight: its running actions finish, no new ones start."""
        self._stop.set()
        self._round_stop.set()

    def run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self._stop.is_set() and self.fatal is None:
            if self._leadership is not None and not self._leadership.leading():
                self._stop.wait(self._leadership.retry_seconds)
                continue
            if self.round():
                retry = FIRST_RETRY_SECONDS
                wait = self._settings.interval
            else:
                wait = min(retry, self._settings.interval)
                retry *= 2
            self._stop.wait(wait)

    def round(self) -> bool:
        started = time.monotonic()
        summary: dict[str, Any] = {}
        session = self._make_session()
        try:
            summary = self._apply(session) if self._settings.apply else self._plan(session)
            ok = summary.pop("ok", True)
        except KeysyncError as exc:
            ok, summary = False, {"error": str(exc).splitlines()[0]}
        finally:
            session.close()
        seconds = time.monotonic() - started
        if self._metrics is not None:
            self._metrics.observe_round(ok, seconds)
        self._log.emit(
            "round", result="success" if ok else "failure", duration_s=round(seconds, 3), **summary
        )
        return bool(ok)

    def _plan(self, session: Session) -> dict[str, Any]:
        snapshot = session.snapshot(PlanRequest())
        self._review(session).planned(snapshot, snapshot.plan)
        if snapshot.plan.failures:
            raise KeysyncError("; ".join(snapshot.plan.failures))
        return _pending(snapshot.plan)

    def _apply(self, session: Session) -> dict[str, Any]:
        from keysync.engine.execution import ApplyRun, apply_sequence

        run = ApplyRun(
            take_lock=self._leadership is None,  # a leader holds it already
            lock_timeout=self._settings.lock_timeout,
            audit_path=self._settings.audit_log,
        )
        self._round_stop = threading.Event()
        if self._stop.is_set() or (self._leadership is not None and self._leadership.lost.is_set()):
            self._round_stop.set()
        review = self._review(session)
        applied = apply_sequence(session, run, review, self._round_stop)
        if applied.audit_error:
            self.fatal = applied.audit_error  # the trail is broken: stop watching, not act unrecorded
            raise KeysyncError(applied.audit_error)
        summary = _pending(applied.plan)
        if not applied.plan.has_changes:
            return summary
        if not applied.changed_anything:
            return {**summary, "skipped": len(review.skipped)}
        report = applied.report
        if self._metrics is not None:
            left = [(a.action, a.reason) for a, _ in review.skipped]
            left += [(o.action.action, o.action.reason) for o in report.failed]
            self._metrics.observe_plan(review.desired, left, len(applied.plan.waiting))
        return {
            **summary,
            "ok": report.succeeded or report.interrupted,
            "applied": report.counts(),
            "skipped": len(review.skipped),
        }

    def _review(self, session: Session) -> _SkipForced:
        return _SkipForced(len(session.loaded.manifest.keys), self._log, self._metrics, self._on_outcome)

    def _on_outcome(self, outcome: Outcome) -> None:
        action = outcome.action
        fields: dict[str, Any] = {
            "action": action.action,
            "name": action.name,
            "reason": action.reason,
            "result": "ok" if outcome.ok else "failed",
        }
        if outcome.created is not None:
            fields["id"] = outcome.created.id
            fields["key_prefix"] = outcome.created.key_prefix
        if outcome.error:
            fields["error"] = outcome.error
        self._log.emit("action", **fields)
        if self._metrics is not None:
            self._metrics.applied.labels(action=action.action, result=fields["result"]).inc()


@dataclass
class _SkipForced:
    """A round's say in the apply sequence: what needs --force is skipped, and said so."""

    desired: int
    log: EventLog
    metrics: WatchMetrics | None
    finished: Callable[[Outcome], None]
    skipped: list[tuple[Action, Guard]] = field(default_factory=list)

    def planned(self, snapshot: Snapshot, plan: Plan) -> None:
        if self.metrics is not None:
            self.metrics.observe_skipped(())
            reasons = [(a.action, a.reason) for a in plan.actions]
            self.metrics.observe_plan(self.desired, reasons, len(plan.waiting))

    def choose(self, snapshot: Snapshot, plan: Plan) -> Plan:
        safe, self.skipped = plan.without_forced()
        for action, guard in self.skipped:
            self.log.emit(
                "skipped", action=action.action, name=action.name, reason=guard.message, needs="--force"
            )
        if self.metrics is not None:
            self.metrics.observe_skipped((a.action, guard.code) for a, guard in self.skipped)
        return safe
