"""Prometheus metrics and the /metrics and /healthz endpoints of `keysync watch`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keysync.errors import UsageError
from keysync.plan import ACTION_KINDS

KEY_STATES = ("in_sync", "missing", "secret_missing", "secret_stale", "rotation_due", "waiting")
_STATE_OF_REASON = {
    "missing": "missing",
    "secret-missing": "secret_missing",
    "secret-stale": "secret_stale",
    "rotation-due": "rotation_due",
}


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise UsageError("--listen needs prometheus_client: pip install 'keysync[metrics]'") from None
    return prometheus_client


class WatchMetrics:
    def __init__(self, interval: float) -> None:
        prom = _client()
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.interval = interval
        self.last_success: float | None = None
        r = self.registry
        self.rounds = prom.Counter("keysync_rounds", "Reconciliation rounds.", ["result"], registry=r)
        self.last_success_ts = prom.Gauge(
            "keysync_last_success_timestamp_seconds", "When a round last succeeded.", registry=r
        )
        self.pending = prom.Gauge(
            "keysync_pending_actions", "Actions the plan holds.", ["action"], registry=r
        )
        self.applied = prom.Counter(
            "keysync_applied_actions", "Actions carried out.", ["action", "result"], registry=r
        )
        self.skipped = prom.Gauge(
            "keysync_skipped_actions", "Actions held back for --force.", ["action", "reason"], registry=r
        )
        self.keys = prom.Gauge("keysync_keys", "Manifest keys by state.", ["state"], registry=r)
        self.leader = prom.Gauge(
            "keysync_leader", "1 while this replica reconciles (always, without --leader-elect).", registry=r
        )
        self.leader.set(1)
        self.duration = prom.Histogram(
            "keysync_round_duration_seconds",
            "Round duration.",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def observe_plan(self, desired: int, reasons: Iterable[tuple[str, str]], waiting: int = 0) -> None:
        counts = dict.fromkeys(ACTION_KINDS, 0)
        states = dict.fromkeys(KEY_STATES, 0)
        states["waiting"] = waiting
        for action, reason in reasons:
            counts[action] = counts.get(action, 0) + 1
            state = _STATE_OF_REASON.get(reason)
            if state and action != "retire":
                states[state] += 1
        states["in_sync"] = max(0, desired - sum(states.values()))
        for action, count in counts.items():
            self.pending.labels(action=action).set(count)
        for state, count in states.items():
            self.keys.labels(state=state).set(count)

    def observe_skipped(self, skipped: Iterable[tuple[str, str]]) -> None:
        self.skipped.clear()
        for action, reason in skipped:
            self.skipped.labels(action=action, reason=reason).inc()

    def observe_round(self, ok: bool, seconds: float) -> None:
        self.rounds.labels(result="success" if ok else "failure").inc()
        self.duration.observe(seconds)
        if ok:
            self.last_success = time.time()
            self.last_success_ts.set(self.last_success)

    def observe_leadership(self, leading: bool, healthy: bool = True) -> None:
        self.leader.set(1 if leading else 0)
        if not leading and healthy:
            self.last_success = time.time()  # a standby that can see the lock is healthy

    def healthy(self) -> bool:
        return self.last_success is not None and time.time() - self.last_success <= 3 * self.interval

    def exposition(self) -> bytes:
        return bytes(self._prom.generate_latest(self.registry))


def serve(metrics: WatchMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serves /metrics and /healthz in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._reply(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path.split("?")[0] == "/healthz":
                ok = metrics.healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"no successful round recently\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise UsageError(f"--listen {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="keysync-metrics", daemon=True).start()
    return server
