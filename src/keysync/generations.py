"""Rotation generations: the live keys `N`, `N-r2`, `N-r3`... that stand for one manifest key `N`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from keysync.keys import LiveKey

_GENERATION = re.compile(r"^(?P<base>.+)-r(?P<number>\d+)$")


def generation_of(name: str) -> tuple[str, int] | None:
    """('gw', 3) for 'gw-r3'; None when the name is no generation suffix (K >= 2)."""
    match = _GENERATION.match(name)
    if match is None or int(match["number"]) < 2 or match["number"].startswith("0"):
        return None
    return match["base"], int(match["number"])


def logical_name(name: str) -> str:
    """The manifest name a live key stands for: 'gw' for both 'gw' and 'gw-r3'."""
    parsed = generation_of(name)
    return parsed[0] if parsed else name


def generation_name(base: str, number: int) -> str:
    return base if number == 1 else f"{base}-r{number}"


@dataclass(frozen=True)
class Generation:
    number: int
    key: LiveKey


Claims = Callable[[str, LiveKey], bool]


def group_generations(
    logical_names: Iterable[str], live: Iterable[LiveKey], claims: Claims | None = None
) -> tuple[dict[str, list[Generation]], dict[str, LiveKey]]:
    """Each logical name's generations, oldest first, and the live keys that belong to none.

    A key `N-rK` joins `N` only when `claims(N, key)` says it is one of N's generations (default:
    always); otherwise it is a key of its own, as a hand-made `edge-r2` beside `edge` is."""
    groups: dict[str, list[Generation]] = {name: [] for name in logical_names}
    rest: dict[str, LiveKey] = {}
    for key in live:
        if key.name in groups:
            groups[key.name].append(Generation(1, key))
            continue
        parsed = generation_of(key.name)
        if parsed is not None and parsed[0] in groups and (claims is None or claims(parsed[0], key)):
            groups[parsed[0]].append(Generation(parsed[1], key))
        else:
            rest[key.name] = key
    for generations in groups.values():
        generations.sort(key=lambda g: g.number)
    return groups, rest
