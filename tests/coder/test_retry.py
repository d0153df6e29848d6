"""keysync.coder.retry: how long to wait before trying again. Pure: no server, no clock."""

from __future__ import annotations

import dataclasses
import random
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysync.coder.retry import (
    UNKNOWN_OUTCOME_STATUS,
    Backoff,
    rate_limit_floor,
    rate_limit_wait,
)

NOW = 1_700_000_000.0  # a whole second, so HTTP-dates (whole seconds) give exact waits

# Backoff.delay


@given(
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=60),
    attempt=st.integers(min_value=0, max_value=60),
    seed=st.integers(),
)
def test_delay_is_full_jitter_within_the_capped_exponential(
    base: float, cap: float, attempt: int, seed: int
) -> None:
    delay = Backoff(base=base, cap=cap).delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2**attempt)


def test_delay_spreads_over_the_whole_range() -> None:
    # Full jitter, not "equal jitter": waits near zero are as likely as waits near the bound.
    backoff = Backoff(base=0.5, cap=100.0)
    rng = random.Random(0)
    delays = [backoff.delay(3, rng) for _ in range(2000)]
    assert min(delays) < 0.05 * 4.0
    assert max(delays) > 0.95 * 4.0
    assert 1.6 < sum(delays) / len(delays) < 2.4


def test_delay_grows_then_stops_at_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    rng = random.Random(1)
    early = max(backoff.delay(0, rng) for _ in range(500))
    later = max(backoff.delay(2, rng) for _ in range(500))
    capped = [backoff.delay(30, rng) for _ in range(500)]
    assert early <= 0.1 < later <= 0.4
    assert max(capped) <= 1.0
    assert max(capped) > 0.9


def test_delay_is_reproducible_with_the_same_generator() -> None:
    backoff = Backoff()
    assert [backoff.delay(n, random.Random(5)) for n in range(6)] == [
        backoff.delay(n, random.Random(5)) for n in range(6)
    ]


def test_defaults_bound_the_total_time() -> None:
    backoff = Backoff()
    assert backoff.attempts >= 2
    # The worst case of every retry of one request together stays short.
    assert sum(min(backoff.cap, backoff.base * 2**n) for n in range(1, backoff.attempts)) < 60
    # PRODUCT.md: rate limits are waited out for up to 3 minutes per request.
    assert backoff.rate_limit_budget == 180.0


def test_backoff_is_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Backoff().attempts = 1  # type: ignore[misc]


def test_a_create_answered_with_a_gateway_error_has_an_unknown_outcome() -> None:
    # A create answered with one of these may have been committed: never blindly repeated.
    assert {500, 502, 504} <= UNKNOWN_OUTCOME_STATUS
    assert 429 not in UNKNOWN_OUTCOME_STATUS


# rate_limit_wait


@pytest.mark.parametrize(("value", "wait"), [("7", 7.0), ("120", 120.0), ("1.5", 1.5), ("3600", 3600.0)])
def test_retry_after_in_seconds(value: str, wait: float) -> None:
    assert rate_limit_wait({"retry-after": value}, NOW) == wait


def test_retry_after_as_an_http_date() -> None:
    assert rate_limit_wait({"retry-after": formatdate(NOW + 30, usegmt=True)}, NOW) == 30.0


@pytest.mark.parametrize("value", ["0", "-5", "-0.5", "3601", "1e12", "nan", "inf", "-inf"])
def test_a_retry_after_that_makes_no_sense_is_no_hint(value: str) -> None:
    # Taken at its word, a negative or zero wait is a storm of immediate retries, and a
    # huge one a hang: the client backs off (with a floor) instead.
    assert rate_limit_wait({"retry-after": value}, NOW) is None


def test_a_senseless_retry_after_falls_back_to_ratelimit_reset() -> None:
    assert rate_limit_wait({"retry-after": "-5", "x-ratelimit-reset": str(int(NOW) + 9)}, NOW) == 9.0


def test_retry_after_date_in_the_past_is_no_hint() -> None:
    assert rate_limit_wait({"retry-after": formatdate(NOW - 30, usegmt=True)}, NOW) is None


def test_ratelimit_reset_is_an_epoch_time() -> None:
    assert rate_limit_wait({"x-ratelimit-reset": str(int(NOW) + 42)}, NOW) == 42.0


@pytest.mark.parametrize("offset", [-5, 0, 10_000])
def test_ratelimit_reset_in_the_past_or_far_away_is_no_hint(offset: int) -> None:
    assert rate_limit_wait({"x-ratelimit-reset": str(int(NOW) + offset)}, NOW) is None


@pytest.mark.parametrize("limited", range(1, 30))
def test_the_floor_after_a_429_grows_and_stays_short(limited: int) -> None:
    assert 0 < rate_limit_floor(limited) <= rate_limit_floor(limited + 1) <= 1.0


def test_retry_after_beats_ratelimit_reset() -> None:
    headers = {"retry-after": "3", "x-ratelimit-reset": str(int(NOW) + 50)}
    assert rate_limit_wait(headers, NOW) == 3.0


@pytest.mark.parametrize("garbage", ["soon", "12abc", "Mon, 99 Foo 2024", "", " "])
def test_garbage_retry_after_falls_back_to_ratelimit_reset(garbage: str) -> None:
    headers = {"retry-after": garbage, "x-ratelimit-reset": str(int(NOW) + 9)}
    assert rate_limit_wait(headers, NOW) == 9.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"x-ratelimit-reset": "tomorrow"},
        {"retry-after": "later", "x-ratelimit-reset": "12:00"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "512"},
    ],
)
def test_no_usable_header_gives_none(headers: dict[str, str]) -> None:
    assert rate_limit_wait(headers, NOW) is None


def test_header_names_are_case_insensitive_with_http_headers() -> None:
    assert rate_limit_wait(httpx.Headers({"Retry-After": "5"}), NOW) == 5.0
    assert rate_limit_wait(httpx.Headers({"X-RateLimit-Reset": str(int(NOW) + 8)}), NOW) == 8.0
