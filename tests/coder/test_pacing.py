"""keysync.coder.pacing against a model of Coder's limiter (the dev server's go-chi/httprate
sliding window) on a simulated clock: no server, no real waiting."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysync.coder.pacing import Pacer
from keysync.devserver.ratelimit import RateLimiter

PATH = "/api/v2/ai-gateway/keys"
ROUND_TRIP = 0.002


@dataclass
class Run:
    finished: float
    refused: list[float] = field(default_factory=list)  # when each 429 came


def paced(requests: int, limit: int, window: float, start: float, others: int = 0) -> Run:
    """`requests` sent one after the other, each when the pacer says; `others` requests by
    someone else on the same bucket just before."""
    now = [start]
    limiter = RateLimiter(limit, window, clock=lambda: int(now[0] * 1e9))
    for _ in range(others):
        limiter.hit("user")
    pacer = Pacer(lambda: now[0])
    run, done = Run(start), 0
    while done < requests:
        now[0] += pacer.reserve(PATH)
        quota = limiter.hit("user")
        now[0] += ROUND_TRIP
        pacer.observe(PATH, {k.lower(): v for k, v in quota.headers().items()}, limited=not quota.allowed)
        if quota.allowed:
            done += 1
        else:
            run.refused.append(now[0])
            pacer.hold_off(PATH, 0.1)
    run.finished = now[0]
    return run


def bound(requests: int, limit: int, window: float, start: float, others: int = 0) -> float:
    """The earliest the limiter lets `requests` through: each sent the moment it is admitted."""
    now = [start]
    limiter = RateLimiter(limit, window, clock=lambda: int(now[0] * 1e9))
    for _ in range(others):
        limiter.hit("user")
    done = 0
    while done < requests:
        if limiter.hit("user").allowed:
            done += 1
            now[0] += ROUND_TRIP
        else:
            now[0] += 0.004
    return now[0]


@settings(max_examples=25, deadline=None)
@given(
    offset=st.floats(min_value=0, max_value=8, allow_nan=False),
    limit=st.sampled_from([5, 20, 100]),
    window=st.sampled_from([1.0, 4.0, 60.0]),
)
def test_pacing_finishes_near_the_sliding_windows_bound_with_one_429_at_most(
    offset: float, limit: int, window: float
) -> None:
    start = 1_800_000_000.0 + offset
    requests = int(3.5 * limit)
    run = paced(requests, limit, window, start)
    best = bound(requests, limit, window, start)
    # One 429 at most: the first request after the first window's end shows the window's length.
    assert len(run.refused) <= 1
    assert run.finished - start <= 1.05 * (best - start) + 2 * ROUND_TRIP * requests + 0.05 * window


def test_requests_someone_else_sent_are_counted_once_an_answer_shows_them() -> None:
    start = 1_800_000_000.5
    run = paced(30, 20, 4.0, start, others=15)
    assert len(run.refused) <= 1
    assert run.finished - start <= 1.05 * (bound(30, 20, 4.0, start, others=15) - start) + 0.3


def test_a_429_teaches_the_window_so_the_wait_after_it_is_short() -> None:
    # Retry-After is always the window (60 s here); the sliding window frees one request
    # after window / (2 * limit) = 0.6 s into the next window, not after a minute.
    start = 1_800_000_059.0
    run = paced(51, 50, 60.0, start)  # 50 in the first second, then the window ends
    assert run.finished - start < 3.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800000060"},
        {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "9", "x-ratelimit-reset": "1800000060"},
        {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "nan"},
        {"x-ratelimit-limit": "five", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1800000060"},
        {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"},
        {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"},
    ],
    ids=[
        "none",
        "zero-limit",
        "more-left-than-the-limit",
        "nan-reset",
        "not-a-number",
        "far-reset",
        "zero-reset",
    ],
)
def test_quota_headers_that_make_no_sense_are_ignored(headers: dict[str, str]) -> None:
    pacer = Pacer(lambda: 1_800_000_000.0)
    pacer.observe(PATH, headers, limited=False)
    assert pacer.reserve(PATH) == 0.0


def test_a_disabled_pacer_never_waits() -> None:
    pacer = Pacer(lambda: 1_800_000_000.0, enabled=False)
    spent = {"x-ratelimit-limit": "1", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800000060"}
    pacer.observe(PATH, spent, limited=True)
    assert pacer.reserve(PATH) == 0.0
