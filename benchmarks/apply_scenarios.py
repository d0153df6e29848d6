"""Scenarios that create keys: latency-bound, CPU-bound, server load, and the alternatives."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import (
    COLLECTION,
    TOKEN,
    BenchError,
    DevServer,
    key_names,
    keysync,
    log,
    median,
    run_timed,
    sink_count,
    spread,
    workspace,
    write_manifest,
)
from loadgen import post_creates
from results import AltRow, Results, Row, Sizes, verdict

LATENCY_TARGET = 1.15
CPU_TARGET = 0.80
GROWTH_TARGET = 1.25


@dataclass(frozen=True)
class ApplyRun:
    """One apply of a fresh manifest, and the plans either side of it."""

    plan_before: float  # `keysync plan` on the same manifest and server, just before the apply
    apply: float
    noop_plan: float  # the no-change `keysync plan` just after it: what the targets subtract
    first_done: float  # when apply's first and last progress lines arrived, after its start
    last_done: float
    apply_cpu: float  # user + system seconds of the apply process

    @property
    def progress_span(self) -> float:
        return self.last_done - self.first_done

    @property
    def beyond_plan(self) -> float:
        """The apply's time beyond a no-change plan of the same manifest (start-up, load, list, diff)."""
        return self.apply - self.noop_plan

    @property
    def beyond_plan_before(self) -> float:
        return self.apply - self.plan_before


def bound_seconds(keys: int, parallelism: int, latency_ms: int) -> float:
    return math.ceil(keys / parallelism) * latency_ms / 1000


def apply_once(directory: Path, url: str, names: list[str], parallelism: int) -> ApplyRun:
    write_manifest(directory, url, names)
    plan = keysync("plan", cwd=directory).check("keysync plan")
    apply = keysync("apply", "--auto-approve", "--parallelism", str(parallelism), cwd=directory)
    apply.check(f"keysync apply --parallelism {parallelism}")
    noop = keysync("plan", "--detailed-exitcode", cwd=directory).check("the no-change plan after apply")
    stored = sink_count(directory)
    if stored != len(names):
        raise BenchError(f"the sink holds {stored} secrets after applying {len(names)} creates")
    first, last = apply.span(f"/{len(names)}]")
    return ApplyRun(plan.seconds, apply.seconds, noop.seconds, first, last, apply.cpu_seconds)


def fresh_apply(names: list[str], parallelism: int, latency_ms: int) -> ApplyRun:
    with workspace() as directory, DevServer(directory, latency_ms) as server:
        return apply_once(directory, server.url, names, parallelism)


def warm_up() -> None:
    """One small apply first, so that no measured process is the one that fills the bytecode cache."""
    log("warming up: one small apply against a dev server")
    fresh_apply(key_names(2, "warm"), 2, 0)


@dataclass(frozen=True)
class Latency:
    runs: list[ApplyRun]
    floors: list[float]  # a bare httpx loop doing the same creates on the same server, seconds


def latency_bound(sizes: Sizes, results: Results) -> Latency:
    n, p, ms = sizes.latency_keys, sizes.latency_parallelism, sizes.latency_ms
    runs, floors = [], []
    for i in range(sizes.runs):
        log(f"latency-bound apply: run {i + 1}/{sizes.runs} ({n} creates, --parallelism {p}, {ms} ms)")
        with workspace() as directory, DevServer(directory, ms) as server:
            runs.append(apply_once(directory, server.url, key_names(n), p))
            floors.append(post_creates(server.url, key_names(n, "bare"), p).seconds)
    bound = bound_seconds(n, p, ms)
    beyond = [r.beyond_plan for r in runs]
    ratio = median(beyond) / bound
    applies, plans = spread([r.apply for r in runs], 1000), spread([r.noop_plan for r in runs], 1000)
    before = median([r.beyond_plan_before for r in runs]) * 1000
    # Less noisy than a difference of two process times: first to last finished create, plus the
    # one latency of the first wave, against the same bound.
    span = [r.progress_span + ms / 1000 for r in runs]
    results.rows.append(
        Row(
            f"Latency-bound apply: {n} creates, --latency-ms {ms}, --parallelism {p}, file sink",
            "apply wall - no-change plan wall (ms); bound ceil(N/p) x latency",
            f"{spread(beyond, 1000)} ms vs bound {bound * 1000:.0f} ms = **{ratio:.2f}x** "
            f"(apply {applies} ms, no-change plan {plans} ms; minus the plan before it instead: "
            f"{before:.0f} ms; "
            f"progress lines span {spread(span, 1000)} ms = {median(span) / bound:.2f}x; "
            f"floor on this machine, a bare httpx loop: {spread(floors, 1000)} ms = "
            f"{median(floors) / bound:.2f}x)",
            f"<= {LATENCY_TARGET}x bound",
            verdict(ratio <= LATENCY_TARGET),
        )
    )
    return Latency(runs, floors)


def cpu_bound(sizes: Sizes, results: Results) -> None:
    n, p = sizes.cpu_keys, sizes.cpu_parallelism
    mine, spans, cpu, bare, bare_cpu, ratios = [], [], [], [], [], []
    failures = 0
    for i in range(sizes.runs):
        log(f"CPU-bound apply: run {i + 1}/{sizes.runs} ({n} creates, --parallelism {p}, then bare httpx)")
        with workspace() as directory, DevServer(directory) as server:
            run = apply_once(directory, server.url, key_names(n), p)
            loop = post_creates(server.url, key_names(n, "bare"), p)
        failures += loop.failed
        mine.append(n / run.beyond_plan)
        spans.append((n - 1) / run.progress_span)
        cpu.append(run.apply_cpu / n * 1000)
        bare_cpu.append(loop.cpu_seconds / n * 1000)
        bare.append(loop.rate)
        ratios.append(mine[-1] / bare[-1])
    ratio = median(ratios)
    span_ratio = median([a / b for a, b in zip(spans, bare, strict=True)])
    results.rows.append(
        Row(
            f"CPU-bound apply: {n} creates, --latency-ms 0, --parallelism {p}, file sink",
            "creates/s during apply (N / (apply - no-change plan)) vs bare httpx loop, same server, same run",
            f"{spread(mine)} vs {spread(bare)} creates/s = **{ratio:.0%}** (from the progress lines' "
            f"span: {spread(spans)} creates/s = {span_ratio:.0%}; CPU per create, whole apply process "
            f"{median(cpu):.2f} ms vs bare loop {median(bare_cpu):.2f} ms)"
            + (f" ({failures} failed bare requests)" if failures else ""),
            f">= {CPU_TARGET:.0%}",
            verdict(ratio >= CPU_TARGET),
        )
    )


def growth(sizes: Sizes, results: Results) -> None:
    """Group commit at growing sizes: a flush rewrites the whole document, yet a create must not
    cost more as the sink fills up (no quadratic growth)."""
    p = sizes.cpu_parallelism
    per_create: dict[int, list[float]] = {}
    for n in sizes.growth_keys:
        for i in range(sizes.runs):
            log(f"growth: {n:,} creates, --parallelism {p}, run {i + 1}/{sizes.runs}")
            run = fresh_apply(key_names(n), p, 0)
            per_create.setdefault(n, []).append(run.beyond_plan / n)
    smallest, largest = min(per_create), max(per_create)
    ratio = median(per_create[largest]) / median(per_create[smallest])
    figures = "; ".join(f"{n:,}: {spread(v, 1000, 2)} ms" for n, v in per_create.items())
    results.rows.append(
        Row(
            f"Group commit as the sink grows: {' / '.join(f'{n:,}' for n in per_create)} creates, "
            f"--latency-ms 0, --parallelism {p}, file sink",
            "ms per create during apply ((apply - no-change plan) / N); ratio largest / smallest",
            f"{figures} = **{ratio:.2f}x**",
            f"<= {GROWTH_TARGET}x (linear)",
            verdict(ratio <= GROWTH_TARGET),
        )
    )


def server_load(sizes: Sizes, results: Results) -> None:
    p = sizes.hammer_parallelism
    failures: Counter[str] = Counter()
    total = 0
    for i in range(sizes.runs):
        log(f"dev server under load: run {i + 1}/{sizes.runs} (parallelism {p})")
        with workspace() as directory, DevServer(directory) as server:
            names = key_names(sizes.hammer_keys)
            write_manifest(directory, server.url, names)
            apply = keysync("apply", "--auto-approve", "--parallelism", str(p), cwd=directory)
            stored = sink_count(directory) if (directory / "secrets.json").exists() else 0
            if apply.returncode != 0 or stored != len(names):
                failures["keysync apply"] += len(names) - stored
            total += len(names)
            for label, prefix, fresh in (
                ("keep-alive", "keep", False),
                ("new connection each", "conn", True),
            ):
                load = post_creates(server.url, key_names(sizes.hammer_requests, prefix), p, fresh)
                failures.update({f"{label}: {kind}": count for kind, count in load.failures.items()})
                total += sizes.hammer_requests
    failed = sum(failures.values())
    detail = ", ".join(f"{k} {v}" for k, v in failures.items()) or "none"
    results.rows.append(
        Row(
            f"Dev server keeps up: parallelism {p}",
            f"failed requests / resets over {total:,} creates: keysync apply ({sizes.hammer_keys}), "
            f"64 httpx threads keep-alive and new-connection-per-request ({sizes.hammer_requests} each)",
            f"**{failed}** ({detail})",
            "0",
            verdict(failed == 0),
        )
    )


_CURL_SEQUENTIAL = """set -eu
while read -r name; do
  curl -sS --fail -X POST -H "Coder-Session-Token: $TOKEN" -H 'Content-Type: application/json' \\
    --data "{\\"name\\":\\"$name\\"}" "$URL$COLLECTION" >> secrets.jsonl
done < names.txt
"""

_CURL_PARALLEL = """set -eu
mkdir -p out
xargs -P "$PARALLELISM" -I{} curl -sS --fail -o out/{}.json -X POST \\
  -H "Coder-Session-Token: $TOKEN" -H 'Content-Type: application/json' \\
  --data '{"name":"{}"}' "$URL$COLLECTION" < names.txt
"""


def _curl_once(script: str, names: list[str], parallelism: int, latency_ms: int) -> float:
    with workspace() as directory, DevServer(directory, latency_ms) as server:
        (directory / "names.txt").write_text("".join(f"{n}\n" for n in names))
        (directory / "load.sh").write_text(script)
        env = {"URL": server.url, "TOKEN": TOKEN, "COLLECTION": COLLECTION, "PARALLELISM": str(parallelism)}
        done = run_timed(["bash", "load.sh"], cwd=directory, extra_env=env).check("the curl loop")
        out = directory / "out"
        made = (
            len(list(out.iterdir()))
            if out.exists()
            else len((directory / "secrets.jsonl").read_text().splitlines())
        )
        if made != len(names):
            raise BenchError(f"the curl loop stored {made} of {len(names)} secrets")
        return done.seconds


def alternatives(sizes: Sizes, results: Results, latency: Latency | None) -> None:
    n, p, ms = sizes.alt_keys, sizes.alt_parallelism, sizes.latency_ms
    if latency is not None:
        big, big_p = sizes.latency_keys, sizes.latency_parallelism
        _keysync_row(results, "keysync apply", big, big_p, ms, latency.runs)
        _wall_row(results, _BARE, big, big_p, ms, latency.floors)
    for parallelism, label in ((p, "keysync apply"), (1, "keysync apply (sequential baseline)")):
        runs = []
        for i in range(sizes.runs):
            log(f"alternatives: {label} --parallelism {parallelism}, {n} creates, run {i + 1}/{sizes.runs}")
            runs.append(fresh_apply(key_names(n), parallelism, ms))
        _keysync_row(results, label, n, parallelism, ms, runs)
    floors = []
    for i in range(sizes.runs):
        log(f"alternatives: {_BARE}, {n} creates, run {i + 1}/{sizes.runs}")
        with workspace() as directory, DevServer(directory, ms) as server:
            floors.append(post_creates(server.url, key_names(n), p).seconds)
    _wall_row(results, _BARE, n, p, ms, floors)
    if shutil.which("curl") is None:
        results.notes.append("curl is not installed here, so the curl loop baselines were not run.")
        return
    for parallelism, label, script in (
        (1, "shell loop of `curl` (sequential)", _CURL_SEQUENTIAL),
        (p, f"`xargs -P {p} curl`", _CURL_PARALLEL),
    ):
        walls = []
        for i in range(sizes.runs):
            log(f"alternatives: {label}, {n} creates, run {i + 1}/{sizes.runs}")
            walls.append(_curl_once(script, key_names(n), parallelism, ms))
        _wall_row(results, label, n, parallelism, ms, walls)


_BARE = "bare httpx loop (threads, one client; no start-up, stores nothing)"


def _wall_row(results: Results, label: str, n: int, p: int, ms: int, walls: list[float]) -> None:
    bound = bound_seconds(n, p, ms)
    results.alternatives.append(
        AltRow(
            label, n, p, spread(walls, 1000), "-", round(bound * 1000), f"{median(walls) / bound:.2f}x (wall)"
        )
    )


def _keysync_row(results: Results, label: str, n: int, p: int, ms: int, runs: list[ApplyRun]) -> None:
    bound = bound_seconds(n, p, ms)
    beyond = [r.beyond_plan for r in runs]
    walls = [r.apply for r in runs]
    results.alternatives.append(
        AltRow(
            label,
            n,
            p,
            spread(walls, 1000),
            spread(beyond, 1000),
            round(bound * 1000),
            f"{median(beyond) / bound:.2f}x (beyond plan), {median(walls) / bound:.2f}x (wall)",
        )
    )
