"""Per-project rate limits on the live API: Redis-backed (shared by every API process),
``APIGW.0308`` with ``Retry-After``, only authenticated requests counted, and a
per-process fallback while Redis is down."""

from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest

from api.app import create_app
from api.ratelimit import MemoryRateLimiter, RedisRateLimiter
from idcard.db import session_scope
from idcard.projects import create_project
from idcard.settings import get_settings

from .api_support import Api, assert_error
from .live_server import HoldingDispatcher, serve_in_thread


def new_project(base: str, limit: int | None) -> Api:
    with session_scope() as session:
        return Api(base, create_project(session, "limited", rate_limit_per_minute=limit))


def assert_limited(r: httpx.Response, limit: int) -> int:
    body = assert_error(r, 429, "APIGW.0308")
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 60 // limit + 1, retry_after
    assert f"{limit} requests per minute" in body["error_msg"]
    return retry_after


def test_a_project_over_its_limit_gets_apigw0308(server: str) -> None:
    limited, neighbour = new_project(server, 3), new_project(server, 3)
    for _ in range(3):
        assert limited.http.get(limited.jobs).status_code == 200
    assert 15 <= assert_limited(limited.http.get(limited.jobs), 3) <= 20  # 60 s / 3
    # Every /v2 route counts, and the refused requests do not extend the wait.
    assert_limited(limited.sync({"image": "x"}), 3)
    assert_limited(limited.http.get(f"{limited.jobs}/{'0' * 32}"), 3)
    assert_limited(limited.http.post(limited.batches, json={"items": []}), 3)
    # Another project has its own allowance; health and metrics are not limited.
    for _ in range(3):
        assert neighbour.http.get(neighbour.jobs).status_code == 200
    for _ in range(5):
        assert limited.http.get("/healthz").status_code == 200


def test_unauthenticated_requests_do_not_spend_a_projects_allowance(server: str) -> None:
    limited = new_project(server, 2)
    for _ in range(10):
        r = httpx.get(f"{server}{limited.jobs}", headers={"X-Auth-Token": "wrong"})
        assert_error(r, 401, "APIGW.0301")
    assert limited.http.get(limited.jobs).status_code == 200
    assert limited.http.get(limited.jobs).status_code == 200
    assert_limited(limited.http.get(limited.jobs), 2)


def test_the_settings_default_and_unlimited_projects(api_database: str,
                                                     dispatcher: HoldingDispatcher) -> None:
    settings = get_settings().model_copy(update={"rate_limit_per_minute": 2})
    with serve_in_thread(create_app(settings, dispatcher)) as base:
        default, unlimited = new_project(base, None), new_project(base, 0)
        assert [default.http.get(default.jobs).status_code for _ in range(2)] == [200, 200]
        assert_limited(default.http.get(default.jobs), 2)
        assert {unlimited.http.get(unlimited.jobs).status_code for _ in range(20)} == {200}


def test_the_limit_is_shared_by_every_api_process(api_database: str,
                                                  dispatcher: HoldingDispatcher) -> None:
    settings = get_settings()
    with serve_in_thread(create_app(settings, dispatcher)) as one, \
            serve_in_thread(create_app(settings, dispatcher)) as two:
        first = new_project(one, 4)
        second = Api(two, first.creds)
        codes = [api.http.get(first.jobs).status_code
                 for api in (first, second, first, second)]
        assert codes == [200] * 4
        assert_limited(second.http.get(first.jobs), 4)
        assert_limited(first.http.get(first.jobs), 4)


def test_signed_requests_count_too(server: str) -> None:
    from .test_sdk_auth import SignedCall

    limited = new_project(server, 2)
    path = f"/v2/{limited.pid}/ocr/id-card/jobs"

    def signed() -> httpx.Response:
        return SignedCall(server, "GET", path, ak=limited.creds["ak"],
                          sk=limited.creds["sk"]).send()

    assert signed().status_code == 200
    assert limited.http.get(limited.jobs).status_code == 200
    assert_limited(signed(), 2)


def test_redis_down_limits_per_process_and_warns(
    api_database: str, dispatcher: HoldingDispatcher, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = get_settings().model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    limiter = RedisRateLimiter(settings.redis_url)
    with caplog.at_level(logging.WARNING, logger="api.ratelimit"), \
            serve_in_thread(create_app(settings, dispatcher, rate_limiter=limiter)) as base:
        limited = new_project(base, 2)
        started = time.monotonic()
        codes = [limited.http.get(limited.jobs).status_code for _ in range(2)]
        assert codes == [200, 200]  # available although Redis is not
        assert_limited(limited.http.get(limited.jobs), 2)
        assert time.monotonic() - started < 5  # no waiting on a dead Redis per request
    limiter.close()
    warnings = [r for r in caplog.records if r.name == "api.ratelimit"]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()


def test_embedded_mode_limits_in_process(api_database: str) -> None:
    app = create_app(get_settings().model_copy(update={"embedded": True}),
                     HoldingDispatcher(None))  # type: ignore[arg-type]
    assert isinstance(app.state.rate_limiter, MemoryRateLimiter)
    app = create_app(get_settings(), HoldingDispatcher(None))  # type: ignore[arg-type]
    assert isinstance(app.state.rate_limiter, RedisRateLimiter)
    app.state.rate_limiter.close()


def test_the_redis_bucket_refills(api_database: str) -> None:
    limiter = RedisRateLimiter(get_settings().redis_url)
    key = f"test-{uuid.uuid4().hex}"
    try:
        started, allowed = time.monotonic(), 0
        while (wait := limiter.acquire(key, 60)) == 0.0 and allowed < 1000:
            allowed += 1
        # A burst of the limit (plus one per second that the burst itself took).
        assert 60 <= allowed <= 60 + (time.monotonic() - started) + 1
        assert 0 < wait <= 1.0  # one request a second refills
        time.sleep(wait + 0.05)
        assert limiter.acquire(key, 60) == 0.0
        assert limiter.acquire(key, 60) > 0
    finally:
        limiter.close()
