"""The dev server's rate limiter is go-chi/httprate's sliding window, checked with a clock we move.

Live-server behaviour (headers, buckets, order) is in test_devserver.py; here is the arithmetic.
"""

from __future__ import annotations

import pytest

from keysync.devserver.ratelimit import NANOSECONDS, RateLimiter, go_duration

MINUTE = 60 * NANOSECONDS
# 2026-12-01T20:00:00Z, a whole number of minutes since Go's zero time.
EPOCH = 1_796_155_200 * NANOSECONDS


class Clock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def limiter(limit: int, window: float = 60.0, at: int = EPOCH) -> tuple[RateLimiter, Clock]:
    clock = Clock(at)
    return RateLimiter(limit, window, clock=clock), clock


def test_the_current_window_admits_the_limit_then_refuses() -> None:
    rate, _ = limiter(3)
    quotas = [rate.hit("k") for _ in range(4)]
    assert [q.allowed for q in quotas] == [True, True, True, False]
    assert [q.remaining for q in quotas] == [2, 1, 0, 0]
    assert {q.reset_at for q in quotas} == {EPOCH // NANOSECONDS + 60}
    assert quotas[-1].headers()["Retry-After"] == "60"
    assert "Retry-After" not in quotas[0].headers()


def test_the_previous_window_weighs_by_the_share_of_it_still_in_view() -> None:
    rate, clock = limiter(10)
    for _ in range(10):
        assert rate.hit("k").allowed
    clock.now = EPOCH + MINUTE + MINUTE // 4  # 15 s into the next window: 7.5 of the 10 still count
    quotas = [rate.hit("k") for _ in range(4)]
    # round(7.5) = 8 (Go rounds halves away from zero), so two are admitted, then 10 is reached.
    assert [q.allowed for q in quotas] == [True, True, False, False]
    assert [q.remaining for q in quotas] == [1, 0, 0, 0]
    clock.now = EPOCH + MINUTE + MINUTE * 3 // 4  # 45 s in: 2.5 of the old count, 2 new
    assert rate.hit("k").remaining == 10 - 5 - 1  # round(2.5 + 2) = 5 (4.5 rounds up)


def test_a_window_two_lengths_old_no_longer_counts() -> None:
    rate, clock = limiter(2)
    rate.hit("k"), rate.hit("k")
    assert not rate.hit("k").allowed
    clock.now = EPOCH + 2 * MINUTE
    assert [rate.hit("k").allowed for _ in range(3)] == [True, True, False]


def test_refused_requests_are_not_counted() -> None:
    rate, clock = limiter(1)
    assert rate.hit("k").allowed
    for _ in range(5):
        assert not rate.hit("k").allowed
    clock.now = EPOCH + MINUTE + MINUTE * 6 // 10  # 60 % into the next: round(0.4) = 0
    assert rate.hit("k").allowed


def test_keys_are_counted_apart() -> None:
    rate, _ = limiter(1)
    assert rate.hit("owner /a").allowed
    assert rate.hit("owner /b").allowed
    assert rate.hit("member /a").allowed
    assert not rate.hit("owner /a").allowed


def test_windows_are_aligned_on_gos_zero_time() -> None:
    # 7 s does not divide the seconds between Go's zero time and the Unix epoch (62135596800),
    # so a 7 s window's edges are not multiples of 7 in Unix time.
    rate, _ = limiter(5, window=7.0, at=EPOCH)
    reset = rate.hit("k").reset_at
    assert (reset + 62_135_596_800) % 7 == 0
    assert EPOCH // NANOSECONDS < reset <= EPOCH // NANOSECONDS + 7


def test_a_bypass_is_a_fresh_bucket() -> None:
    rate, _ = limiter(3)
    for _ in range(3):
        rate.hit("k")
    fresh = rate.fresh()
    assert fresh.allowed and fresh.remaining == 2
    assert not rate.hit("k").allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "1m0s"), (3600, "1h0m0s"), (2, "2s"), (1.5, "1.5s"), (0.25, "250ms"), (90.5, "1m30.5s"), (0, "0s")],
)
def test_windows_are_named_as_go_prints_a_duration(seconds: float, text: str) -> None:
    assert go_duration(round(seconds * NANOSECONDS)) == text
