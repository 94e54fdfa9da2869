"""The in-process rate limiter (``serve --embedded``) on a fake clock."""

from __future__ import annotations

import pytest

from api.ratelimit import MemoryRateLimiter, RateLimitExceeded, check


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_limit_then_one_per_interval() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    assert [limiter.acquire("p", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("p", 3) == pytest.approx(20.0)  # 60 s / 3
    clock.now += 19.9
    assert limiter.acquire("p", 3) == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("p", 3) == 0.0
    assert limiter.acquire("p", 3) > 0
    clock.now += 60
    assert [limiter.acquire("p", 3) for _ in range(4)][:3] == [0.0, 0.0, 0.0]


def test_refused_requests_do_not_use_the_allowance() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    for _ in range(2):
        limiter.acquire("p", 2)
    for _ in range(100):
        assert limiter.acquire("p", 2) > 0
    clock.now += 30
    assert limiter.acquire("p", 2) == 0.0


def test_projects_have_their_own_buckets() -> None:
    limiter = MemoryRateLimiter(Clock())
    assert limiter.acquire("a", 1) == 0.0
    assert limiter.acquire("a", 1) > 0
    assert limiter.acquire("b", 1) == 0.0


def test_check_raises_apigw0308_with_retry_after_in_whole_seconds() -> None:
    limiter = MemoryRateLimiter(Clock())
    check(limiter, "p", 0)  # 0: unlimited, never counted
    check(limiter, "p", 1)
    with pytest.raises(RateLimitExceeded) as info:
        check(limiter, "p", 1)
    assert info.value.code.value == "APIGW.0308" and info.value.http_status == 429
    assert info.value.headers == {"Retry-After": "60"}
    for _ in range(1000):
        check(limiter, "q", 0)
