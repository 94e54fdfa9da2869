"""Replay protection on the live API: an AK/SK signature is accepted once.

Signed requests are made with the official SDK's ``Signer`` (``SignedCall``) or with
the official client itself; the seen signatures live in the real Redis, shared by every
API process. A fresh signature (another ``X-Sdk-Date``, another request) always passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import redis

from api.app import create_app
from api.auth import REPLAYED
from api.replay import KEY_PREFIX, MemoryReplayGuard, RedisReplayGuard
from idcard.db import session_scope
from idcard.projects import create_project
from idcard.settings import get_settings

from .api_support import TINY, Api, assert_error
from .live_server import HoldingDispatcher, serve_in_thread
from .test_sdk_auth import (
    SDK_DATE_FORMAT,
    ClientRequestException,
    IdCardRequestBody,
    RecognizeIdCardRequest,
    SignedCall,
    sdk_client,
)

INVALID = "the AK/SK signature is not valid"


def signed_sync(api: Api, date: str | None = None, base: str | None = None
                ) -> SignedCall:
    content = json.dumps({"image": TINY}).encode()
    return SignedCall(base or str(api.http.base_url), "POST", f"/v2/{api.pid}/ocr/id-card",
                      ak=api.creds["ak"], sk=api.creds["sk"], body=content,
                      headers={"X-Project-Id": api.pid}, sdk_date=date)


def accepted(r: Any) -> None:
    # TINY fails in the worker: authentication passed and the request ran.
    assert_error(r, 400, "AIS.0103")


def refused_as_replay(r: Any) -> None:
    assert assert_error(r, 401, "APIGW.0301")["error_msg"] == REPLAYED


def send_to(call: SignedCall, base: str) -> httpx.Response:
    """``call`` exactly as signed (its Host header included), sent to another server."""
    return httpx.request(call.method, base + call.uri, headers=call.headers,
                         content=call.body, timeout=60)


@pytest.fixture
def project(server: str) -> Api:
    with session_scope() as session:
        return Api(server, create_project(session, "replay"))


@pytest.fixture
def second_server(api_database: str, dispatcher: HoldingDispatcher) -> Iterator[str]:
    """Another API process on the same database and Redis."""
    with serve_in_thread(create_app(get_settings(), dispatcher)) as base:
        yield base


def test_a_replayed_request_is_refused_and_a_fresh_signature_accepted(project: Api) -> None:
    call = signed_sync(project)
    accepted(call.send())
    refused_as_replay(call.send())
    refused_as_replay(call.send())
    # The same request signed again (another X-Sdk-Date) is a new request.
    accepted(signed_sync(project).send())
    # Tokens are not signatures: the same token any number of times.
    assert all(project.http.get(project.jobs).status_code == 200 for _ in range(3))


def test_a_replay_to_another_api_process_is_refused(project: Api, second_server: str
                                                    ) -> None:
    call = signed_sync(project)
    accepted(call.send())
    refused_as_replay(send_to(call, second_server))
    fresh = signed_sync(project, base=second_server)
    accepted(fresh.send())
    refused_as_replay(send_to(fresh, str(project.http.base_url)))


def test_a_signature_is_kept_in_redis_until_its_date_leaves_the_window(
        project: Api) -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    pattern = f"{KEY_PREFIX}{project.creds['ak']}:*"
    try:
        now = datetime.now(timezone.utc)
        accepted(signed_sync(project, now.strftime(SDK_DATE_FORMAT)).send())
        ten_minutes_ago = (now - timedelta(minutes=10)).strftime(SDK_DATE_FORMAT)
        accepted(signed_sync(project, ten_minutes_ago).send())
        keys = sorted(client.scan_iter(pattern), key=client.ttl)
        assert len(keys) == 2
        ttls = [client.ttl(k) for k in keys]
        # 15 min left of the window, +60 s margin; 5 min left for a 10-minute-old date.
        assert 5 * 60 + 50 <= ttls[0] <= 6 * 60 + 1, ttls
        assert 15 * 60 + 50 <= ttls[1] <= 16 * 60 + 1, ttls
        # The signature itself is not stored, only a hash of it.
        auth = signed_sync(project, ten_minutes_ago).headers["Authorization"]
        assert not any(auth.rpartition("=")[2].encode() in k for k in keys)
    finally:
        client.close()


def test_a_request_refused_for_its_signature_does_not_burn_it(project: Api) -> None:
    call = signed_sync(project)
    # Someone who saw the signature in flight sends it first with another body: that
    # is refused, and does not stop the genuine request.
    other = call.send(body=call.body.replace(b"}", b', "side": "back"}'))
    assert assert_error(other, 401, "APIGW.0301")["error_msg"] == INVALID
    accepted(call.send())
    refused_as_replay(call.send())


def test_an_idempotent_retry_with_a_fresh_signature_is_the_same_job(
        project: Api, dispatcher: HoldingDispatcher) -> None:
    base, path = str(project.http.base_url), f"/v2/{project.pid}/ocr/id-card/jobs"
    body = json.dumps({"image": TINY, "client_reference": "retry"}).encode()

    def attempt() -> SignedCall:  # signed anew each time, as the SDK does
        return SignedCall(base, "POST", path, ak=project.creds["ak"],
                          sk=project.creds["sk"], body=body,
                          headers={"Idempotency-Key": "order-7"})

    first = attempt()
    r1 = first.send()
    assert r1.status_code == 202, r1.text
    refused_as_replay(first.send())  # the very same bytes: a replay
    r2 = attempt().send()  # signed again: an ordinary idempotent retry
    assert r2.status_code == 202, r2.text
    assert r2.json()["job_id"] == r1.json()["job_id"]
    assert r2.headers["Idempotent-Replayed"] == "true"


def test_a_request_refused_by_the_rate_limit_may_be_sent_again(server: str) -> None:
    # HTTP clients (urllib3's Retry, the SDK's retry_times) resend a 429 unchanged
    # after Retry-After: it did nothing, so its signature is not spent.
    with session_scope() as session:
        limited = Api(server, create_project(session, "limited", rate_limit_per_minute=1))
    path = f"/v2/{limited.pid}/ocr/id-card/jobs"

    def listing() -> SignedCall:
        return SignedCall(server, "GET", path, ak=limited.creds["ak"],
                          sk=limited.creds["sk"])

    ok = listing()
    assert ok.send().status_code == 200
    refused_as_replay(ok.send())  # still a replay, even when over the limit
    second = listing()
    assert_error(second.send(), 429, "APIGW.0308")
    assert_error(second.send(), 429, "APIGW.0308")  # not APIGW.0301


def test_the_official_sdk_works_call_after_call(project: Api) -> None:
    client = sdk_client(str(project.http.base_url), project.creds["ak"],
                        project.creds["sk"], project.pid)
    # Three different requests in a row, as an application makes them: the SDK signs
    # each one, nothing is taken for a replay.
    for side in ("front", "back", "double_side"):
        with pytest.raises(ClientRequestException) as info:
            client.recognize_id_card(RecognizeIdCardRequest(
                body=IdCardRequestBody(image=TINY, side=side)))
        assert (info.value.status_code, info.value.error_code) == (400, "AIS.0103")


def test_embedded_mode_guards_in_process(project: Api, api_database: str,
                                         dispatcher: HoldingDispatcher) -> None:
    settings = get_settings().model_copy(update={"embedded": True,
                                                 "redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(settings, dispatcher)
    with serve_in_thread(app) as base:
        call = signed_sync(project, base=base)
        accepted(call.send())
        refused_as_replay(call.send())
    assert isinstance(app.state.replay_guard, MemoryReplayGuard)


def test_replay_protection_can_be_turned_off(project: Api, api_database: str,
                                             dispatcher: HoldingDispatcher) -> None:
    settings = get_settings().model_copy(update={"sdk_replay_protection": False})
    with serve_in_thread(create_app(settings, dispatcher)) as base:
        call = signed_sync(project, base=base)
        accepted(call.send())
        accepted(call.send())


def test_redis_down_remembers_per_process_and_warns(caplog: pytest.LogCaptureFixture
                                                    ) -> None:
    async def run() -> list[bool]:
        guard = RedisReplayGuard("redis://127.0.0.1:1/0")
        try:
            return [await guard.claim("AK:abc", 60), await guard.claim("AK:abc", 60),
                    await guard.claim("AK:def", 60)]
        finally:
            await guard.aclose()

    with caplog.at_level(logging.WARNING, logger="api.replay"):
        assert asyncio.run(run()) == [True, False, True]
    assert caplog.text.count("Redis unavailable") == 1  # once per outage window
