"""Scenarios that change nothing: start-up time, and a no-change plan over many live keys."""

from __future__ import annotations

import time

from harness import (
    PYTHON,
    BenchError,
    DevServer,
    Timed,
    keysync,
    log,
    median,
    run_timed,
    spread,
    workspace,
    write_manifest,
)
from loadgen import list_seconds
from results import ERROR, FAILS, INFO, Results, Row, Sizes, verdict
from seeding import seed_keys, write_sink, write_state

STARTUP_TARGET = 4.0
SCALE_SECONDS_TARGET = 1.0
SCALE_RSS_TARGET_MB = 300


def startup(sizes: Sizes, results: Results) -> float:
    """Returns the median `keysync --version` time, for the scale scenario to subtract."""
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "keysync --version": ["keysync", "--version"],
        "keysync --help": ["keysync", "--help"],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    log(f"start-up: {sizes.startup_reps} rounds of {', '.join(commands)}")
    for round_ in range(sizes.startup_reps + 1):
        for label, argv in commands.items():
            done = (keysync(*argv[1:]) if argv[0] == "keysync" else run_timed(argv)).check(label)
            if round_:  # the first round warms the page cache and bytecode
                times[label].append(done.seconds)
    bare = median(times["python -c pass"])
    for label in ("keysync --version", "keysync --help"):
        ratio = median(times[label]) / bare
        results.rows.append(
            Row(
                f"Start-up: `{label}`",
                f"wall ms, median of {sizes.startup_reps}, vs `python -c pass` in the same venv",
                f"{spread(times[label], 1000)} ms vs {spread(times['python -c pass'], 1000)} ms "
                f"= **{ratio:.1f}x**",
                f"<= {STARTUP_TARGET:g}x",
                verdict(ratio <= STARTUP_TARGET),
            )
        )
    return median(times["keysync --version"])


def scale(sizes: Sizes, results: Results, count: int, target: bool) -> None:
    try:
        _scale(sizes, results, count, target)
    except BenchError as exc:
        # Past the targets' size a refusal is a finding about keysync, not a broken benchmark.
        outcome = ERROR if target else FAILS
        results.rows.append(Row(f"Scale: no-change plan, {count:,} live keys", "-", str(exc), "-", outcome))


def scale_names(count: int) -> list[str]:
    """Short names (`k00042`) in an unindented list, so that 100,000 keys fit the 1 MiB manifest
    limit (9 bytes a key; `  - key-000042` took 15)."""
    return [f"k{i:05d}" for i in range(count)]


def _scale(sizes: Sizes, results: Results, count: int, target: bool) -> None:
    with workspace() as directory:
        log(f"scale: seeding {count:,} keys (state file and sink)")
        started = time.perf_counter()
        names = scale_names(count)
        keys = seed_keys(names, seed=count)
        write_state(directory / "state.json", keys)
        with DevServer(directory, state=directory / "state.json") as server:
            write_sink(directory / "secrets.json", server.url, keys)
            size_kb = write_manifest(directory, server.url, names, indent="").stat().st_size / 1024
            setup = time.perf_counter() - started
            plans: list[Timed] = []
            versions: list[float] = []
            for i in range(sizes.runs):
                log(f"scale: no-change plan over {count:,} keys, run {i + 1}/{sizes.runs}")
                versions.append(keysync("--version").check("keysync --version").seconds)
                plans.append(keysync("plan", "--detailed-exitcode", cwd=directory))
                plans[-1].check(f"keysync plan over {count:,} keys (exit 2 would mean changes)")
            server_list = list_seconds(server.url)
    beyond = [p.seconds - v for p, v in zip(plans, versions, strict=True)]
    rss = [p.max_rss_mb for p in plans]
    cpu = [p.cpu_seconds for p in plans]
    seconds_ok = median(beyond) < SCALE_SECONDS_TARGET
    rss_ok = max(rss) < SCALE_RSS_TARGET_MB
    walls = spread([p.seconds for p in plans], 1000)
    results.rows.append(
        Row(
            f"Scale: no-change plan, {count:,} live keys, manifest ({size_kb:,.0f} KiB) and sink to match",
            "plan wall - `keysync --version` wall; peak RSS of the plan process",
            f"**{spread(beyond, 1000)} ms** beyond start-up (plan {walls} ms; "
            f"the server's list answer alone {server_list * 1000:.0f} ms); "
            f"**{spread(rss, 1, 0)} MB** peak RSS; plan CPU {spread(cpu, 1000)} ms; setup {setup:.1f} s",
            f"< {SCALE_SECONDS_TARGET:g} s, < {SCALE_RSS_TARGET_MB} MB" if target else "none (reported)",
            verdict(seconds_ok and rss_ok) if target else INFO,
        )
    )
