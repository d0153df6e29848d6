"""`keysync dev-server`: the local emulator of Coder's keys API."""

from __future__ import annotations

from pathlib import Path

import click

from keysync.cli.commands import boundary


@click.command("dev-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=7080, show_default=True, help="0 picks a free port."
)
@click.option("--token", help="The owner's session token (default: random, printed on stderr).")
@click.option("--member-token", help="A non-owner's session token (gets 403).")
@click.option(
    "--api",
    type=click.Choice(["coderd-keys", "aibridge-keys", "ai-gateway-keys"]),
    default="ai-gateway-keys",
    show_default=True,
    help="Which API generation to serve.",
)
@click.option(
    "--last-seen-field",
    type=click.Choice(["last_heartbeat_at", "last_used_at"]),
    help="The listed field for a key's last heartbeat: last_heartbeat_at (the default on "
    "ai-gateway-keys) or last_used_at (the older generations; with ai-gateway-keys, its first servers).",
)
@click.option("--feature-disabled", is_flag=True, help="Answer 403 Premium feature.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Persist keys (hashed secrets only) in this file.",
)
@click.option(
    "--latency-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Answer each request this long after it arrived; its change lands halfway.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests answered 500.",
)
@click.option(
    "--lose-response-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of creates committed but left unanswered.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Requests per window per user and path, as a sliding window (0 = off).",
)
@click.option(
    "--rate-window",
    default="1m",
    show_default=True,
    metavar="DURATION",
    help="The rate limit's window; shorter only to make tests and benchmarks quick.",
)
@click.option(
    "--heartbeat-interval",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="How often an open gateway connection records a heartbeat and checks its key still exists.",
)
@click.option("--seed", type=int, help="Make ids, secrets and faults reproducible.")
@boundary
def dev_server(
    host: str,
    port: int,
    token: str | None,
    member_token: str | None,
    api: str,
    feature_disabled: bool,
    state: Path | None,
    latency_ms: int,
    fail_rate: float,
    lose_response_rate: float,
    rate_limit: int,
    rate_window: str,
    heartbeat_interval: str,
    last_seen_field: str | None,
    seed: int | None,
) -> int:
    """Run a local emulator of the Coder AI Gateway keys API.

    \b
    Example:
      keysync dev-server --port 7080 --token dev-token --latency-ms 20
    \b
    A gateway replica, to connect with one of its keys (reads the file once):
      python -m keysync.devserver.replica --url http://127.0.0.1:7080 --key-file KEYFILE
    """
    from keysync.devserver import DevServerConfig, run
    from keysync.errors import UsageError

    try:
        config = DevServerConfig(
            host=host,
            port=port,
            token=token,
            member_token=member_token,
            api=api,
            feature_disabled=feature_disabled,
            state=state,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            lose_response_rate=lose_response_rate,
            rate_limit=rate_limit,
            rate_window=_seconds("--rate-window", rate_window),
            heartbeat_interval=_seconds("--heartbeat-interval", heartbeat_interval),
            last_seen_field=last_seen_field,
            seed=seed,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return run(config)


def _seconds(option: str, text: str) -> float:
    from keysync.duration import parse_duration
    from keysync.errors import UsageError

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


COMMANDS = [dev_server]
