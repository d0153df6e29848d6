"""Benchmarks keysync against its targets and its alternatives; prints a Markdown table.

    .venv/bin/python benchmarks/run.py            # full: median of 5 runs, about four minutes
    .venv/bin/python benchmarks/run.py --quick    # smoke run, under a minute
    .venv/bin/python benchmarks/run.py --no-big   # without the no-change plan over 100,000 keys

Progress goes to stderr, the report to stdout (and to --output FILE).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from apply_scenarios import (
    Latency,
    alternatives,
    cpu_bound,
    growth,
    latency_bound,
    server_load,
    warm_up,
)
from coder_scenarios import detection, pacing
from harness import BenchError, log
from read_scenarios import scale, startup
from report import load_average, render
from results import ERROR, QUICK, Results, Row, Sizes

SCENARIOS = ("latency", "cpu", "growth", "load", "startup", "scale", "alternatives", "detection", "pacing")
# Minutes long (the real one-minute window, 512 a minute): only when asked for with --only.
EXTRA_SCENARIOS = ("pacing-minute",)
BIG_KEYS = 100_000


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, help="runs per scenario; the median is reported (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: a smoke test")
    parser.add_argument(
        "--big",
        action=argparse.BooleanOptionalAction,
        help=f"also plan over {BIG_KEYS:,} live keys (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS + EXTRA_SCENARIOS,
        help="run just this scenario (repeatable)",
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    if args.runs is not None and not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    if args.runs is not None:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.big if args.big is not None else not args.quick:
        sizes = dataclasses.replace(sizes, scale_keys=(*sizes.scale_keys, BIG_KEYS))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sizes = sizes_for(args)
    chosen = {*(args.only or SCENARIOS), "warm-up"}
    results = Results()
    started = time.perf_counter()
    load_before = load_average()
    latency: list[Latency] = []

    def guarded(name: str, step: Callable[[], object]) -> None:
        if name not in chosen:
            return
        try:
            step()
        except BenchError as exc:
            log(f"{name}: {exc}")
            results.rows.append(Row(name, "-", f"could not run: {exc}", "-", ERROR))

    guarded("warm-up", warm_up)
    guarded("latency", lambda: latency.append(latency_bound(sizes, results)))
    guarded("cpu", lambda: cpu_bound(sizes, results))
    guarded("growth", lambda: growth(sizes, results))
    guarded("load", lambda: server_load(sizes, results))
    guarded("startup", lambda: startup(sizes, results))
    for count in sizes.scale_keys:
        guarded("scale", functools.partial(scale, sizes, results, count, target=count <= 10_000))
    guarded("alternatives", lambda: alternatives(sizes, results, latency[0] if latency else None))
    guarded("detection", lambda: detection(sizes, results))
    guarded("pacing", lambda: pacing(sizes, results))
    guarded("pacing-minute", lambda: pacing(sizes, results, limit=512, window=60.0))

    command = shlex.join(
        [".venv/bin/python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
    )
    report = render(results, sizes, command, time.perf_counter() - started, load_before)
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 1 if any(row.verdict == ERROR for row in results.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
