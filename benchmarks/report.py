"""The Markdown report: the machine, the targets table, the alternatives table, the notes."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from harness import KEYSYNC
from results import Results, Sizes


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    version = _output([KEYSYNC, "--version"]) or "keysync ?"
    curl = (_output(["curl", "--version"]) or "").split(" (")[0] if shutil.which("curl") else "no curl"
    system = f"{platform.system()} {platform.release()}"
    return (
        f"{cpu}, {os.cpu_count()} cores, {system}, "
        f"Python {platform.python_version()} ({sys.implementation.name}), {version}, {curl}"
    )


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = done.stdout.strip().splitlines()
    return lines[0] if lines else ""


def load_average() -> str:
    """The 1-minute load average: others' work on the same machine skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


def _smoke_warning(sizes: Sizes) -> list[str]:
    targets = Sizes()
    if sizes.latency_keys >= targets.latency_keys and sizes.cpu_keys >= targets.cpu_keys:
        return []
    return [
        "",
        "**A smoke run** (`--quick`): sizes far below the targets' and one run each, so start-up and "
        "noise weigh far more than in the targets' scenarios; the verdicts are indicative only.",
    ]


def render(results: Results, sizes: Sizes, command: str, seconds: float, load_before: str) -> str:
    runs = "1 run" if sizes.runs == 1 else f"median of {sizes.runs} runs, (min-max) in brackets"
    lines = [
        "## Benchmarks",
        "",
        f"Machine: {machine()}; 1-minute load average {load_before} before, {load_average()} after.  ",
        f"Reproduce: `{command}` ({runs}; this run took {seconds:.0f} s). "
        "Every scenario starts its own `keysync dev-server --port 0 --seed 7` in a temporary "
        "directory; every keysync figure is a real `keysync` subprocess.",
        *_smoke_warning(sizes),
        "",
        "| Scenario | Measured | Result | Target | |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.scenario} | {r.measured} | {r.result} | {r.target} | {r.verdict} |" for r in results.rows
    ]
    if results.alternatives:
        lines += [
            "",
            f"### Against the alternatives (dev server `--latency-ms {sizes.latency_ms}`)",
            "",
            "| Tool | Keys | Parallelism | Wall (ms) | Beyond plan (ms) | Bound (ms) | Ratio to bound |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {a.tool} | {a.keys} | {a.parallelism} | {a.wall_ms} | {a.beyond_plan_ms} | "
            f"{a.bound_ms} | {a.ratio} |"
            for a in results.alternatives
        ]
    lines += ["", *_NOTES, *(f"- {note}" for note in results.notes)]
    return "\n".join(lines) + "\n"


_NOTES = [
    "- *Wall* is the whole process, start-up included. *Beyond plan* is `keysync apply` wall time "
    "minus the wall time of the no-change `keysync plan` of the same manifest and server run just "
    "after it (the same start-up, manifest load, list and diff the apply does before its first "
    "create).",
    "- keysync writes each secret durably (fsync, atomic replace, group commit) before a create "
    "counts as done; the curl loops only append the response bodies to files, without fsync.",
    "- A *bare httpx loop* is p threads sharing one `httpx.Client` inside the benchmark process, "
    "POSTing the same number of creates to the same kind of dev server (in the CPU-bound and "
    "latency-bound rows: the very same server, right after keysync's apply); it stores nothing. It "
    "is the floor this machine allows: the dev server and the client share its cores.",
    "- *Progress lines span*: apply prints one line per finished action off a terminal; the time "
    "from its first to its last such line (plus one latency for the first wave) is the execution "
    "phase without start-up, and is less noisy than a difference of two process wall times.",
    "- Peak RSS comes from `wait4` on that very process (`ru_maxrss`).",
]
