"""Scenarios about talking to Coder: how many round trips detection costs, and how close a
large apply gets to the bound of Coder's sliding-window rate limit."""

from __future__ import annotations

import math

from harness import DevServer, key_names, keysync, log, median, spread, workspace, write_manifest
from results import INFO, Results, Row, Sizes, verdict

from keysync.devserver.ratelimit import RateLimiter

DETECTION_LATENCY_MS = 250
DETECTION_TARGET_TRIPS = 2
PACING_LIMIT, PACING_WINDOW = 20, 4.0
PACING_MULTIPLE = 3.5
PACING_TARGET = 1.1
PACING_PARALLELISM = 8
# Go's Time.Truncate counts windows from Go's zero time (year 1).
_GO_ZERO = 62_135_596_800


def detection(sizes: Sizes, results: Results) -> None:
    """A no-change plan under `api: auto`, 250 ms from the server, against the same plan with no
    latency: what the network adds, in round trips; and, from the server's log, how many
    rounds of requests it saw."""
    for generation in ("coderd-keys", "ai-gateway-keys"):
        near: list[float] = []
        far: list[float] = []
        rounds: list[int] = []
        for i in range(sizes.runs):  # interleaved, so that both see the machine equally busy
            log(f"detection: no-change plans, {generation}, 0 and {DETECTION_LATENCY_MS} ms, run {i + 1}")
            near.append(_plan(generation, 0)[0])
            wall, seen = _plan(generation, DETECTION_LATENCY_MS)
            far.append(wall)
            rounds.append(seen)
        # The fastest runs: a busy machine adds to a wall time, never takes away.
        trips = (min(far) - min(near)) / (DETECTION_LATENCY_MS / 1000)
        results.rows.append(
            Row(
                f"Detection: no-change `plan`, `api: auto`, server serving {generation}, "
                f"--latency-ms {DETECTION_LATENCY_MS}",
                "rounds of requests in the server's log (a request answered over half a latency after "
                "the first starts a new one); (fastest plan at 250 ms - fastest at 0 ms) / 250 ms",
                f"the server saw **{max(rounds)} round** of requests in every run (the three probes "
                f"together; the winner's list is the plan's list); wall: {trips:.2f} round trips "
                f"beyond start-up (plan {spread(far, 1000)} ms vs {spread(near, 1000)} ms)",
                f"<= {DETECTION_TARGET_TRIPS} round trips",
                verdict(max(rounds) <= DETECTION_TARGET_TRIPS),
            )
        )


def _plan(generation: str, latency_ms: int) -> tuple[float, int]:
    """A no-change plan's wall time, and how many rounds of requests it sent."""
    with workspace() as directory:
        with DevServer(directory, latency_ms, options=["--api", generation], log_requests=True) as server:
            write_manifest(directory, server.url, [])
            plan = keysync("plan", "--detailed-exitcode", cwd=directory).check("no-change plan")
        answered = [at for at, line in server.requests if line.startswith("GET /api")]
    if not latency_ms or not answered:
        return plan.seconds, 0
    # A request answered more than half a latency after the first belongs to a later round.
    return plan.seconds, 1 + round((answered[-1] - answered[0]) / (latency_ms / 1000))


def pacing(sizes: Sizes, results: Results, limit: int = PACING_LIMIT, window: float = PACING_WINDOW) -> None:
    """3.5 x the limit's worth of creates under a sliding-window limit, against its bound."""
    creates = math.ceil(PACING_MULTIPLE * limit)
    ratios, worst, walls, bounds = [], [], [], []
    for i in range(1 if window > 10 else sizes.runs):
        log(f"pacing: {creates} creates, --rate-limit {limit} --rate-window {window:g}s, run {i + 1}")
        with workspace() as directory:
            options = ["--rate-limit", str(limit), "--rate-window", f"{window:g}s"]
            with DevServer(directory, options=options, log_requests=True) as server:
                write_manifest(directory, server.url, key_names(creates))
                keysync(
                    "apply", "--auto-approve", "--parallelism", str(PACING_PARALLELISM), cwd=directory
                ).check("paced apply")
            requests = list(server.requests)
        start, finish, refused = _shape(requests, window)
        bound = _bound(creates + 1, limit, window, start) - start  # the list shares the creates' bucket
        walls.append(finish - start)
        bounds.append(bound)
        ratios.append((finish - start) / bound)
        worst.append(max(refused.values(), default=0))
    ratio = median(ratios)
    results.rows.append(
        Row(
            f"Pacing: {creates} creates ({PACING_MULTIPLE:g}x the limit), --rate-limit {limit} "
            f"--rate-window {window:g}s, --parallelism {PACING_PARALLELISM}",
            "first request to last create (server's log) vs the sliding window's bound from the same "
            "start; most 429s in one window",
            f"{spread(walls, 1, 2)} s vs bound {spread(bounds, 1, 2)} s = **{ratio:.3f}x**; "
            f"**{max(worst)}** 429 in the worst window",
            f"<= {PACING_TARGET:g}x, <= 1 per window",
            verdict(ratio <= PACING_TARGET and max(worst) <= 1) if window <= 10 else INFO,
        )
    )


def _shape(requests: list[tuple[float, str]], window: float) -> tuple[float, float, dict[int, int]]:
    """When the first request and the last create were answered, and the 429s per window."""
    seen = [(at, line.split()) for at, line in requests if line.startswith(("GET /api", "POST /api"))]
    start = seen[0][0]
    finish = max(at for at, words in seen if words[0] == "POST" and words[2] == "201")
    refused: dict[int, int] = {}
    for at, words in seen:
        if words[2] == "429":
            number = math.floor((at + _GO_ZERO) / window)
            refused[number] = refused.get(number, 0) + 1
    return start, finish, refused


def _bound(requests: int, limit: int, window: float, start: float) -> float:
    """The earliest moment the limiter can have admitted `requests` sent from `start` on, each
    the moment it would be admitted."""
    now = [start]
    limiter = RateLimiter(limit, window, clock=lambda: int(now[0] * 1e9))
    admitted = 0
    while admitted < requests:
        if limiter.hit("bench").allowed:
            admitted += 1
        else:
            now[0] += 0.001
    return now[0]
