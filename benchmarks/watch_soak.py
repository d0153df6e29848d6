"""Watch soak: many `keysync watch --apply` rounds in one process, a key healed in each.

    .venv/bin/python benchmarks/watch_soak.py              # 1,000 rounds
    .venv/bin/python benchmarks/watch_soak.py --rounds 200

Every round, one managed key is deleted behind keysync's back, so the round plans a create,
takes the lock, writes the secret and closes its sink, as a long-running watch does. Threads,
open file descriptors and RSS are read from /proc at round 10 and at the last round: a watch
that runs for months must hold them flat. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import httpx
from harness import TOKEN, DevServer, key_names, log, workspace, write_manifest

from keysync.engine.session import Options, Session
from keysync.engine.watch import EventLog, Watcher, WatchSettings

KEYS = 20
FIRST_SAMPLE = 10


def resources() -> dict[str, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_mb": rss_kb / 1024,
    }


def delete_one(client: httpx.Client, url: str, round_number: int) -> None:
    listed = client.get(f"{url}/api/v2/ai-gateway/keys").json()
    victim = listed[round_number % len(listed)]
    client.delete(f"{url}/api/v2/ai-gateway/keys/{victim['id']}").raise_for_status()


def serving(directory: Path) -> DevServer:
    server = DevServer(directory)
    server.argv += ["--api", "ai-gateway-keys"]
    return server


def soak(rounds: int) -> dict[int, dict[str, float]]:
    samples: dict[int, dict[str, float]] = {}
    with workspace() as directory, serving(directory) as server:
        manifest = write_manifest(directory, server.url, key_names(KEYS))
        os.environ["CODER_SESSION_TOKEN"] = TOKEN
        options = Options(manifest=manifest, api="ai-gateway-keys")
        with open(os.environ.get("SOAK_LOG", os.devnull), "w") as quiet:
            watcher = Watcher(
                lambda: Session(options),
                WatchSettings(interval=0.0, apply=True),
                EventLog("json", quiet),
                None,
                threading.Event(),
            )
            headers = {"Coder-Session-Token": TOKEN}
            with httpx.Client(headers=headers, timeout=10) as client:
                if not watcher.round():
                    raise SystemExit("the first round failed")
                for number in range(1, rounds + 1):
                    delete_one(client, server.url, number)
                    if not watcher.round():
                        raise SystemExit(f"round {number} failed")
                    if number in (FIRST_SAMPLE, rounds):
                        samples[number] = resources()
                        log(f"round {number}: {samples[number]}")
    return samples


ROWS = (("threads", "threads", ".0f"), ("open fds", "fds", ".0f"), ("RSS (MB)", "rss_mb", ".1f"))


def render(samples: dict[int, dict[str, float]]) -> str:
    first, last = (samples[n] for n in sorted(samples))
    lines = [f"| | round {FIRST_SAMPLE} | round {max(samples)} | change |", "|---|---|---|---|"]
    for label, field, spec in ROWS:
        change = last[field] - first[field]
        lines.append(f"| {label} | {first[field]:{spec}} | {last[field]:{spec}} | {change:+{spec}} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    if args.rounds <= FIRST_SAMPLE:
        parser.error(f"--rounds must be above {FIRST_SAMPLE}")
    print(render(soak(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
