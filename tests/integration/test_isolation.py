"""A project never sees, cancels, lists or is told about another project's jobs, on
every ``/v2`` route and with either credential (X-Auth-Token or AK/SK signature).

Project A owns the jobs and the batch; project B attacks with its own valid credential:
- A's ``project_id`` in the path: ``APIGW.0301`` (the credential is not A's);
- B's ``project_id`` with A's job or batch id: ``IDC.0404`` (never 403: ids do not leak);
- B's lists, batch results and idempotency keys never reach A's jobs;
- A's webhooks carry A's ids only and are signed with A's secret only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from idcard import webhooks
from idcard.db import session_scope
from idcard.projects import get_project, webhook_secret
from idcard.settings import get_settings

from .api_support import TINY, Api, assert_error, b64, held
from .live_server import HoldingDispatcher, wait_until
from .test_sdk_auth import SignedCall
from .worker_support import LocalServer, send

KINDS = ("token", "aksk")


def call(kind: str, api: Api, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """``api``'s credential, as a token or as an SDK signature."""
    content = b"" if body is None else json.dumps(body).encode()
    base = str(api.http.base_url)
    if kind == "token":
        all_headers = {"X-Auth-Token": api.creds["token"], "Content-Type": "application/json",
                       **(headers or {})}
        return httpx.request(method, base + path, content=content, headers=all_headers,
                             timeout=60)
    path_only, _, query = path.partition("?")
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return SignedCall(base, method, path_only, ak=api.creds["ak"], sk=api.creds["sk"],
                      body=content, query=pairs, headers=headers).send()  # type: ignore[arg-type]


@dataclass
class Owned:
    """What project A has: a finished job, a queued job, a batch (ids)."""

    finished: str
    queued: str
    batch: str


@pytest.fixture(scope="module")
def owned(api: Api, dispatcher: HoldingDispatcher) -> Owned:
    finished = api.submitted({"image": TINY, "client_reference": "a-finished"})
    api.wait(finished)
    dispatcher.hold()  # A's other jobs never run: they stay queued (cancellable)
    try:
        queued = api.submitted({"image": TINY, "client_reference": "a-queued"})
        r = api.http.post(api.batches, json={"items": [{"image": TINY}]})
        assert r.status_code == 202, r.text
    finally:
        dispatcher.forget()
    return Owned(finished, queued, r.json()["batch_id"])


def routes(pid: str, owned: Owned) -> list[tuple[str, str, Any]]:
    """Every /v2 route: (method, path, body), aimed at project ``pid`` and A's ids."""
    base = f"/v2/{pid}/ocr/id-card"
    return [
        ("POST", base, {"image": TINY}),
        ("POST", f"{base}/jobs", {"image": TINY}),
        ("GET", f"{base}/jobs", None),
        ("GET", f"{base}/jobs?status=queued&limit=200", None),
        ("GET", f"{base}/jobs/{owned.finished}", None),
        ("DELETE", f"{base}/jobs/{owned.queued}", None),
        ("GET", f"{base}/jobs/{owned.finished}/events", None),
        ("POST", f"{base}/batches", {"items": [{"image": TINY}]}),
        ("GET", f"{base}/batches/{owned.batch}", None),
        ("GET", f"{base}/batches/{owned.batch}/results", None),
    ]


ROUTE_NAMES = ["sync", "submit", "list", "list-filtered", "get", "cancel", "events",
               "batch-submit", "batch-get", "batch-results"]


def a_state(api: Api, owned: Owned) -> tuple[int, str, dict]:
    jobs = api.http.get(api.jobs, params={"limit": 200}).json()["jobs"]
    return (len(jobs), api.job(owned.queued).json()["status"],
            api.http.get(f"{api.batches}/{owned.batch}").json()["counts"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("route", range(len(ROUTE_NAMES)), ids=ROUTE_NAMES)
def test_another_projects_path_is_apigw0301(api: Api, other: Api, owned: Owned, kind: str,
                                            route: int) -> None:
    before = a_state(api, owned)
    method, path, body = routes(api.pid, owned)[route]
    assert_error(call(kind, other, method, path, body), 401, "APIGW.0301")
    assert a_state(api, owned) == before  # nothing created, cancelled or counted


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("route", ["get", "cancel", "events", "batch-get", "batch-results"])
def test_another_projects_ids_are_idc0404(api: Api, other: Api, owned: Owned, kind: str,
                                          route: str) -> None:
    before = a_state(api, owned)
    method, path, body = routes(other.pid, owned)[ROUTE_NAMES.index(route)]
    r = call(kind, other, method, path, body)
    error = assert_error(r, 404, "IDC.0404")
    assert owned.finished not in error["error_msg"] and owned.batch not in error["error_msg"]
    assert a_state(api, owned) == before  # A's queued job is still queued
    if route != "cancel":  # the owner still sees it: the 404 is about the caller
        own_path = routes(api.pid, owned)[ROUTE_NAMES.index(route)][1]
        assert call(kind, api, method, own_path).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_lists_and_batch_results_never_include_another_projects_jobs(
    api: Api, other: Api, owned: Owned, kind: str,
) -> None:
    mine = other.submitted({"image": TINY, "client_reference": "b-own"})
    theirs = {owned.finished, owned.queued}
    for query in ("", "?limit=200", "?status=queued", "?status=failed",
                  "?status=cancelled", "?created_after=2000-01-01T00:00:00Z"):
        r = call(kind, other, "GET", f"/v2/{other.pid}/ocr/id-card/jobs{query}")
        assert r.status_code == 200, r.text
        listed = {j["job_id"] for j in r.json()["jobs"]}
        assert not listed & theirs
    everything = call(kind, other, "GET", f"/v2/{other.pid}/ocr/id-card/jobs?limit=200")
    assert mine in {j["job_id"] for j in everything.json()["jobs"]}
    # A's own list is A's only.
    assert mine not in {j["job_id"] for j in api.http.get(
        api.jobs, params={"limit": 200}).json()["jobs"]}
    r = call(kind, other, "POST", f"/v2/{other.pid}/ocr/id-card/batches",
             {"items": [{"image": TINY}]})
    assert r.status_code == 202, r.text
    lines = call(kind, other, "GET", r.json()["results_url"]).text.splitlines()
    assert {json.loads(line)["job_id"] for line in lines} == set(r.json()["job_ids"])


def test_the_same_idempotency_key_in_two_projects_is_two_jobs(
    api: Api, other: Api, dispatcher: HoldingDispatcher,
) -> None:
    body = {"image": TINY, "client_reference": "same"}
    with held(dispatcher):
        a = api.submit(body, key="shared-key-1")
        b = other.submit(body, key="shared-key-1")
        assert a.status_code == b.status_code == 202
        assert a.json()["job_id"] != b.json()["job_id"]
        assert "Idempotent-Replayed" not in b.headers
        assert_error(other.job(a.json()["job_id"]), 404, "IDC.0404")


def test_webhooks_go_to_the_owner_only_signed_with_its_secret(
    api: Api, other: Api, card: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDCARD_URL_ALLOW_HOSTS", "127.0.0.1")  # the receiver is local
    get_settings.cache_clear()
    with LocalServer() as hooks:
        hooks.routes["/a"] = hooks.routes["/b"] = lambda h: send(h, 204)
        a_job = api.submitted({"image": b64(card.image_bytes), "callback_url": hooks.url("/a")})
        b_job = other.submitted({"image": TINY, "callback_url": hooks.url("/b")})
        wait_until(lambda: len(hooks.received) >= 2, 60, "webhooks not delivered")
        time.sleep(0.2)  # nothing more should arrive
    get_settings.cache_clear()
    by_path = {r.path: r for r in hooks.received}
    assert len(hooks.received) == 2 and set(by_path) == {"/a", "/b"}
    with session_scope() as session:
        secrets = {name: webhook_secret(get_project(session, x.pid))
                   for name, x in (("a", api), ("b", other))}
    for mine, theirs, job_id, project in (("a", "b", a_job, api), ("b", "a", b_job, other)):
        received = by_path[f"/{mine}"]
        event = json.loads(received.body)
        assert event["job_id"] == job_id and event["project_id"] == project.pid
        signature = received.headers[webhooks.SIGNATURE_HEADER]
        assert webhooks.verify(secrets[mine], received.body, signature)
        assert not webhooks.verify(secrets[theirs], received.body, signature)
    # B's receiver never saw A's job, its result or its project.
    b_body = by_path["/b"].body.decode()
    assert a_job not in b_body and api.pid not in b_body
    assert card.expected["number"] not in b_body
