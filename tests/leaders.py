"""Leader election seen from outside: which of a group of `keysync watch --leader-elect` replicas
leads, by its log lines, and whether a replica answers /healthz."""

from __future__ import annotations

from watching import Watch


def healthy(watch: Watch) -> bool:
    return watch.healthz() == 200


def leading(watch: Watch) -> bool:
    states = [e["state"] for e in watch.events("leadership") if e["state"] in ("leader", "standby")]
    return bool(states) and states[-1] == "leader"


def the_leader(group: list[Watch]) -> Watch:
    def found() -> Watch | None:
        leaders = [w for w in group if w.process.poll() is None and leading(w)]
        return leaders[0] if len(leaders) == 1 else None

    return group[0].until(found, "exactly one leader")
