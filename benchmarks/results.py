"""What a benchmark run is asked to do and what it found, ready for the Markdown report."""

from __future__ import annotations

from dataclasses import dataclass, field

MET = "✅ met"
MISSED = "❌ missed"
INFO = "info"
ERROR = "❌ error"
FAILS = "❌ keysync fails"


@dataclass(frozen=True)
class Sizes:
    runs: int = 5
    latency_ms: int = 20
    latency_keys: int = 400
    latency_parallelism: int = 16
    cpu_keys: int = 2000
    cpu_parallelism: int = 32
    growth_keys: tuple[int, ...] = (1000, 4000, 8000)
    hammer_keys: int = 1000
    hammer_requests: int = 2000
    hammer_parallelism: int = 64
    startup_reps: int = 10
    scale_keys: tuple[int, ...] = (10_000,)
    alt_keys: int = 100
    alt_parallelism: int = 16


QUICK = Sizes(
    runs=1,
    latency_keys=64,
    cpu_keys=300,
    growth_keys=(200, 800),
    hammer_keys=200,
    hammer_requests=300,
    startup_reps=5,
    scale_keys=(1000,),
    alt_keys=20,
)


@dataclass(frozen=True)
class Row:
    scenario: str
    measured: str
    result: str
    target: str
    verdict: str


@dataclass(frozen=True)
class AltRow:
    tool: str
    keys: int
    parallelism: int
    wall_ms: str
    beyond_plan_ms: str
    bound_ms: int
    ratio: str


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    alternatives: list[AltRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verdict(ok: bool) -> str:
    return MET if ok else MISSED
