"""`keysync watch`: reconcile on a timer."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keysync.cli.commands import boundary
from keysync.cli.group import EXIT_INTERRUPTED, make_options, shared_options

if TYPE_CHECKING:
    from keysync.engine.leadership import Leadership
    from keysync.engine.metrics import WatchMetrics
    from keysync.engine.session import Options
    from keysync.engine.watch import EventLog


@click.command()
@shared_options
@click.option("--interval", default="5m", show_default=True, metavar="DURATION", help="Time between rounds.")
@click.option("--apply", "do_apply", is_flag=True, help="Apply each round's plan (never with --force).")
@click.option("--listen", metavar="HOST:PORT", help="Serve /metrics and /healthz here (e.g. 127.0.0.1:9464).")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per action carried out to this file.",
)
@click.option("--parallelism", type=click.IntRange(1, 256), default=10, show_default=True)
@click.option("--lock-timeout", metavar="DURATION", help="Wait this long for the sink lock each round.")
@click.option("--bypass-rate-limit", is_flag=True, help="Send X-Coder-Bypass-Ratelimit: true (owners).")
@click.option(
    "--leader-elect",
    is_flag=True,
    help="Run several replicas: only the one holding the sink's lock reconciles, the others stand by. "
    "Sinks: kubernetes (a Lease) and vault (its KV lock); any other is refused.",
)
@click.option(
    "--lease-duration",
    default="15s",
    show_default=True,
    metavar="DURATION",
    help="With --leader-elect: how long a leader that stopped renewing keeps the lock.",
)
@boundary
def watch(
    interval: str,
    do_apply: bool,
    listen: str | None,
    log_format: str,
    audit_log: Path | None,
    parallelism: int,
    lock_timeout: str | None,
    bypass_rate_limit: bool,
    leader_elect: bool,
    lease_duration: str,
    **kwargs: Any,
) -> int:
    """Plan every interval, and apply with --apply; serve metrics with --listen.

    \b
    Examples:
      keysync watch --interval 5m --apply --listen 127.0.0.1:9464
      keysync watch --interval 5m --apply --leader-elect --lease-duration 15s
    """
    from keysync.cli.commands.applying import seconds
    from keysync.engine.metrics import WatchMetrics, serve
    from keysync.engine.session import Session
    from keysync.engine.watch import EventLog, Watcher, WatchSettings

    options = make_options(kwargs, parallelism=parallelism, bypass_rate_limit=bypass_rate_limit)
    every = seconds(interval, "--interval") or 300.0
    settings = WatchSettings(every, do_apply, audit_log, seconds(lock_timeout, "--lock-timeout"))
    address = _host_port(listen) if listen else None
    metrics = WatchMetrics(every) if address else None
    from keysync.cli import console

    log = EventLog(log_format, write=console.err)  # a stderr gone away costs lines, not the watch
    leadership = _leadership(options, lease_duration, log, metrics, audit_log) if leader_elect else None
    watcher = Watcher(lambda: Session(options), settings, log, metrics, threading.Event(), leadership)
    server = serve(metrics, *address) if metrics and address else None
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        from keysync.transport.deadline import interrupt_requests

        received.append(signum)
        watcher.interrupt()
        interrupt_requests()  # a request stuck on a slow server ends after a short grace

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    log.capture_logging()
    log.emit("start", interval_s=every, apply=do_apply, listen=listen or "")
    try:
        watcher.run()
    finally:
        if leadership is not None:
            leadership.release()  # a standby takes over now, not once the lease expires
        if server is not None:
            server.shutdown()
    log.emit("stop", signal=signal.Signals(received[0]).name if received else "", error=watcher.fatal or "")
    if watcher.fatal:
        return 1  # the stop line above carries the error, keeping stderr one JSON object a line
    return EXIT_INTERRUPTED if received and received[0] == signal.SIGINT else 0


def _leadership(
    options: Options, duration: str, log: EventLog, metrics: WatchMetrics | None, audit_log: Path | None
) -> Leadership:
    from keysync.cli.commands.applying import seconds
    from keysync.engine.leadership import Leadership
    from keysync.engine.session import Session

    lease = seconds(duration, "--lease-duration") or 15.0
    if lease < 1:
        from keysync.errors import UsageError

        raise UsageError(f"--lease-duration {duration}: at least 1s (renewals come every third of it)")
    return Leadership(Session(options), lease, log, metrics, audit_log)


def _host_port(listen: str) -> tuple[str, int]:
    from keysync.errors import UsageError

    host, _, port = listen.rpartition(":")
    if not host or not port.isascii() or not port.isdigit():
        raise UsageError(f"--listen {listen!r}: use HOST:PORT, e.g. 127.0.0.1:9464")
    if int(port) > 65535:
        raise UsageError(f"--listen {listen[:60]!r}: port {port[:20]} is above 65535")
    return host.strip("[]"), int(port)


COMMANDS = [watch]
