"""Runs keysync in this process under cProfile, worker threads included, and saves the stats.

    .venv/bin/python benchmarks/profiled.py OUT.prof apply --auto-approve --parallelism 32

`python -m cProfile` sees only the main thread, but apply does its work in a thread pool: here
every thread gets its own profiler and the stats are merged at exit. Read the result with
`python -m pstats OUT.prof` (sort cumtime / tottime, stats 40).
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import sys
import threading
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _original_run(self, *args, **kwargs)
    finally:
        profile.disable()


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    from keysync.cli.group import main as keysync_main

    profile = cProfile.Profile()
    profile.enable()
    try:
        code = keysync_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        profile.disable()
    with _lock:
        stats = pstats.Stats(profile)
        for other in _profiles:
            with contextlib.suppress(TypeError):  # a thread that ran no Python code has no stats
                stats.add(other)
    stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
