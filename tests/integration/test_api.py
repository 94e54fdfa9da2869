"""The HTTP API for real: uvicorn on a free port, httpx over sockets, PostgreSQL, and the
real worker's job runner and engine in process (``serve --embedded``'s dispatcher).

Engine calls are few (a card photo takes ~0.5-1 s); most error paths fail fast (bad
base64, a 1x1 PNG) or never reach a worker. The fixtures live in ``api_support``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from api.app import create_app
from idcard.options import FLAGS
from idcard.settings import get_settings

from .api_support import TINY, Api, assert_error, b64, held, png
from .live_server import HoldingDispatcher, serve_in_thread, wait_until

# --- the synchronous route ------------------------------------------------------------


def test_sync_reads_a_card_like_the_vendor(api: Api, card: Any) -> None:
    r = api.sync({"image": b64(card.image_bytes)})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": card.expected}


@pytest.mark.parametrize(("body", "code", "status"), [
    ({"image": TINY, "url": "https://example.com/a.jpg"}, "AIS.0101", 400),
    ({}, "AIS.0101", 400),
    ({"image": TINY, "return_verification": "true"}, "AIS.0101", 400),
    ({"image": TINY, "detect_blur": 1}, "AIS.0101", 400),
    ({"image": TINY, "side": "top"}, "AIS.0101", 400),
    ({"image": 12345}, "AIS.0101", 400),
    ({"image": "data:image/png;base64," + TINY}, "AIS.0102", 400),
    ({"image": "@@not base64@@"}, "AIS.0102", 400),
    ({"url": "ftp://example.com/a.jpg"}, "IDC.0202", 400),
], ids=["image-and-url", "neither", "string-flag", "int-flag", "bad-side", "image-number",
        "data-prefix", "not-base64", "ftp-url"])
def test_sync_refuses_bad_requests_at_once(api: Api, body: dict, code: str,
                                           status: int) -> None:
    assert_error(api.sync(body), status, code)


def test_sync_answers_the_workers_image_errors(api: Api) -> None:
    noise = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert_error(api.sync({"image": b64(b"\x00" + noise)}), 400, "AIS.0102")
    assert_error(api.sync({"image": TINY}), 400, "AIS.0103")
    assert_error(api.sync({"image": b64(png(1200, 900))}), 400, "AIS.0104")


def test_base64_over_10_mb_is_ais0103(api: Api) -> None:
    assert_error(api.sync({"image": "A" * (10 * 1024 * 1024 + 4)}), 400, "AIS.0103")


@pytest.mark.parametrize(("content", "content_type"), [
    (b'{"image": ', "application/json"),
    (b"[1, 2]", "application/json"),
    (b'"just a string"', "application/json"),
    (b"", "application/json"),
    (b'{"image": NaN}', "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b"[" * 200_000 + b"]" * 200_000, "application/json"),
    (b'{"image": "x"}', "text/plain"),
    (b"image=x", "application/x-www-form-urlencoded"),
], ids=["truncated", "array", "string", "empty", "nan", "bad-utf8", "deep", "text-plain",
        "form"])
def test_malformed_bodies_are_ais0101(api: Api, content: bytes, content_type: str) -> None:
    r = api.http.post(f"/v2/{api.pid}/ocr/id-card", content=content,
                      headers={"Content-Type": content_type})
    assert_error(r, 400, "AIS.0101")


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    # Declares 20 MB and sends a few bytes: the answer must come without the rest.
    host, port = api.http.base_url.host, api.http.base_url.port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("POST", f"/v2/{api.pid}/ocr/id-card")
    conn.putheader("X-Auth-Token", api.creds["token"])
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(20 * 1024 * 1024))
    conn.endheaders(b'{"image": "')
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 400
    assert body["error_code"] == "AIS.0103"


def test_sync_timeout_is_idc0408_and_the_job_goes_on(
    api: Api, api_database: str, dispatcher: HoldingDispatcher,
) -> None:
    slow = HoldingDispatcher(dispatcher.inner)
    slow.hold()
    settings = get_settings().model_copy(update={"sync_timeout_seconds": 0.5})
    with serve_in_thread(create_app(settings, slow)) as base:
        r = httpx.post(f"{base}/v2/{api.pid}/ocr/id-card", json={"image": TINY},
                       headers={"X-Auth-Token": api.creds["token"]}, timeout=30)
    body = assert_error(r, 504, "IDC.0408")
    job_id = body["error_msg"].split("job ")[1].split(":")[0]
    assert api.job(job_id).json()["status"] == "queued"
    slow.release()
    assert api.wait(job_id)["error_code"] == "AIS.0103"


# --- authentication and isolation -----------------------------------------------------


def test_missing_or_wrong_token_is_apigw0301(api: Api) -> None:
    url = f"{api.http.base_url}/v2/{api.pid}/ocr/id-card"
    assert_error(httpx.post(url, json={"image": TINY}), 401, "APIGW.0301")
    assert_error(httpx.post(url, json={"image": TINY}, headers={"X-Auth-Token": "nope"}),
                 401, "APIGW.0301")
    assert_error(httpx.get(f"{api.http.base_url}{api.jobs}"), 401, "APIGW.0301")
    signed = {"Authorization": "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, "
              "Signature=00", "X-Sdk-Date": "20261130T000000Z"}
    body = assert_error(httpx.post(url, json={"image": TINY}, headers=signed), 401,
                        "APIGW.0301")
    assert "x-sdk-date" in body["error_msg"]  # more in test_sdk_auth.py
    body = assert_error(httpx.post(url, json={"image": TINY},
                                   headers={"Authorization": "Bearer x"}), 401, "APIGW.0301")
    assert "unsupported" in body["error_msg"]


def test_unknown_job_ids_are_not_found(api: Api) -> None:
    # Another project's jobs and batches, on every route: test_isolation.py.
    assert_error(api.job("0" * 32), 404, "IDC.0404")
    assert_error(api.job("not-a-job-id"), 404, "IDC.0404")
    assert_error(api.http.get(f"{api.batches}/{'0' * 32}"), 404, "IDC.0404")


# --- asynchronous jobs ----------------------------------------------------------------


def test_async_job_runs_and_is_audited(api: Api, card: Any) -> None:
    r = api.submit({"image": b64(card.image_bytes), "priority": "bulk",
                    "client_reference": "loan-42", "return_verification": True})
    assert r.status_code == 202, r.text
    created = r.json()
    assert set(created) == {"job_id", "status", "status_url"}
    assert created["status"] == "queued"
    assert created["status_url"] == f"{api.jobs}/{created['job_id']}"

    view = api.wait(created["job_id"])
    assert view["status"] == "succeeded", view
    assert {"job_id", "status", "created_at", "started_at", "finished_at", "attempts",
            "result", "error_code", "error_msg"} <= set(view)
    assert view["attempts"] == 1 and view["error_code"] is None
    assert view["client_reference"] == "loan-42" and view["priority"] == "bulk"
    result = view["result"]["result"]  # the body the sync route would have answered
    assert {k: result[k] for k in card.expected} == card.expected
    assert result["verification_result"]["valid_number"] is True

    events = api.http.get(f"{api.jobs}/{created['job_id']}/events").json()
    names = [e["event"] for e in events["events"]]
    # 'enqueued' is recorded once the hand-over returned: a fast worker may have
    # recorded 'started' already.
    assert names[0] == "created"
    assert names.index("started") < names.index("succeeded") < names.index("input_deleted")
    assert {"enqueued", "result_read"} <= set(names)
    by_name = {e["event"]: e for e in events["events"]}
    assert by_name["created"]["actor"] == by_name["enqueued"]["actor"] == "api:token"
    assert by_name["started"]["actor"] == "worker:embedded"
    assert by_name["enqueued"]["detail"] == {"queue": "bulk"}
    # Each read of the result is one more audit event.
    api.job(created["job_id"])
    again = api.http.get(f"{api.jobs}/{created['job_id']}/events").json()["events"]
    assert [e["event"] for e in again].count("result_read") == names.count("result_read") + 1


def test_a_failed_job_carries_the_vendor_error(api: Api) -> None:
    view = api.wait(api.submitted({"image": TINY}))
    assert view["status"] == "failed"
    assert view["error_code"] == "AIS.0103" and view["error_msg"]
    assert view["result"] is None


@pytest.mark.parametrize(("extra", "code"), [
    ({"priority": "urgent"}, "AIS.0101"),
    ({"callback_url": "ftp://hooks.example.com/x"}, "AIS.0101"),
    ({"callback_url": "not a url"}, "AIS.0101"),
    ({"callback_url": 7}, "AIS.0101"),
    ({"client_reference": "x" * 129}, "AIS.0101"),
    ({"client_reference": "\ud800"}, "AIS.0101"),
])
def test_job_options_are_validated(api: Api, extra: dict, code: str) -> None:
    assert_error(api.submit({"image": TINY, **extra}), 400, code)


def test_idempotency_key_replays_the_same_job(api: Api, dispatcher: HoldingDispatcher
                                              ) -> None:
    body = {"image": TINY, "client_reference": "idem"}
    with held(dispatcher):
        first = api.submit(body, key="order-7781")
        again = api.submit({"client_reference": "idem", "image": TINY}, key="order-7781")
        assert first.status_code == again.status_code == 202
        assert again.json()["job_id"] == first.json()["job_id"]
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        conflict = api.submit({**body, "return_verification": True}, key="order-7781")
        assert_error(conflict, 409, "IDC.0409")
        assert_error(api.submit(body, key="k" * 201), 400, "AIS.0101")
        assert_error(api.submit(body, key="has space"), 400, "AIS.0101")
    api.wait(first.json()["job_id"])


def test_cancel_a_queued_job_but_not_a_finished_one(api: Api,
                                                    dispatcher: HoldingDispatcher) -> None:
    with held(dispatcher):
        job_id = api.submitted({"image": TINY})
        r = api.http.delete(f"{api.jobs}/{job_id}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled" and r.json()["finished_at"]
        assert api.http.delete(f"{api.jobs}/{job_id}").json()["status"] == "cancelled"
    # Released: the worker finds it cancelled and leaves it alone.
    time.sleep(0.3)
    assert api.job(job_id).json()["status"] == "cancelled"
    events = [e["event"] for e in api.http.get(f"{api.jobs}/{job_id}/events").json()["events"]]
    assert "cancelled" in events and "started" not in events

    finished = api.submitted({"image": TINY})
    api.wait(finished)
    assert_error(api.http.delete(f"{api.jobs}/{finished}"), 409, "IDC.0410")


def test_list_pages_filters_and_isolation(fresh: Api, other: Api,
                                          dispatcher: HoldingDispatcher) -> None:
    with held(dispatcher):
        ids = [fresh.submitted({"image": TINY, "client_reference": f"r{i}"})
               for i in range(5)]
        other.submitted({"image": TINY})
        fresh.http.delete(f"{fresh.jobs}/{ids[1]}")

        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = fresh.http.get(fresh.jobs, params=params).json()
            assert all("result" not in j for j in page["jobs"])
            seen += [j["job_id"] for j in page["jobs"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1] and pages == 3  # newest first, nothing twice

        cancelled = fresh.http.get(fresh.jobs, params={"status": "cancelled"}).json()
        assert [j["job_id"] for j in cancelled["jobs"]] == [ids[1]]
        third = fresh.job(ids[2]).json()["created_at"]
        after = fresh.http.get(fresh.jobs, params={"created_after": third}).json()
        assert [j["job_id"] for j in after["jobs"]] == ids[:1:-1]
        before = fresh.http.get(fresh.jobs, params={"created_before": third}).json()
        assert [j["job_id"] for j in before["jobs"]] == ids[1::-1]

        for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "junk"},
                       {"status": "done"}, {"created_after": "yesterday"}):
            assert_error(fresh.http.get(fresh.jobs, params=params), 400, "AIS.0101")
    for job_id in ids:
        fresh.wait(job_id)


# --- batches --------------------------------------------------------------------------


def test_batch_submit_counts_and_results(api: Api, other: Api, card: Any) -> None:
    items = [
        {"image": b64(card.image_bytes), "client_reference": "c-0",
         "return_verification": True},
        {"image": TINY, "client_reference": "c-1"},
        {"url": "http://127.0.0.1:9/card.jpg", "client_reference": "c-2"},
    ]
    r = api.http.post(api.batches, json={"items": items, "side": "front"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert len(created["job_ids"]) == 3
    batch_url = f"{api.batches}/{created['batch_id']}"
    assert created["status_url"] == batch_url
    assert created["results_url"] == f"{batch_url}/results"

    wait_until(lambda: api.http.get(batch_url).json()["done"], 60, "batch did not finish")
    view = api.http.get(batch_url).json()
    assert view["total"] == 3 and view["priority"] == "bulk"
    assert view["counts"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 2,
                              "cancelled": 0}

    r = api.http.get(f"{batch_url}/results")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["job_id"] for line in lines] == created["job_ids"]
    assert [line["client_reference"] for line in lines] == ["c-0", "c-1", "c-2"]
    first = lines[0]["response"]["result"]
    assert {k: first[k] for k in card.expected} == card.expected
    assert "verification_result" in first  # the item's own flag
    assert lines[1]["response"]["error_code"] == "AIS.0103"
    assert lines[2]["status"] == "failed"
    assert lines[2]["response"]["error_code"].startswith("IDC.02")  # refused or failed URL

    assert_error(other.http.get(batch_url), 401, "APIGW.0301")  # not its project
    assert_error(other.http.get(f"{other.batches}/{created['batch_id']}"), 404, "IDC.0404")
    assert_error(other.http.get(f"{other.batches}/{created['batch_id']}/results"), 404,
                 "IDC.0404")


@pytest.mark.parametrize(("body", "code", "where"), [
    ({"items": []}, "AIS.0101", ""),
    ({"items": "x"}, "AIS.0101", ""),
    ({"items": [{"image": TINY}, {"image": TINY, "url": "http://a/b"}]}, "AIS.0101",
     "items[1]"),
    ({"items": [{"image": "data:x"}]}, "AIS.0102", "items[0]"),
    ({"items": [{"image": TINY, "detect_glare": "yes"}]}, "AIS.0101", "items[0]"),
    ({"items": [{"image": TINY}], "return_verification": 1}, "AIS.0101", ""),
    ({"items": [{"image": TINY}], "priority": "now"}, "AIS.0101", ""),
    ({"items": [{"url": "http://a/b"}] * 1001}, "AIS.0101", ""),
])
def test_batch_validation(api: Api, body: dict, code: str, where: str) -> None:
    error = assert_error(api.http.post(api.batches, json=body), 400, code)
    assert error["error_msg"].startswith(where)


# --- errors, health, metrics, OpenAPI -------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    assert_error(api.http.get("/nope"), 404, "APIGW.0101")
    assert_error(api.http.put(f"/v2/{api.pid}/ocr/id-card", json={}), 404, "APIGW.0101")


class _BrokenDispatcher:
    def enqueue(self, job_id: str, queue: str) -> None:
        raise AssertionError("unreachable")

    def wait(self, job_id: str, timeout: float) -> str | None:
        return None

    def ready(self) -> bool:
        raise RuntimeError("internal detail at /srv/secret/path.py")

    def queue_depths(self) -> dict[str, int]:
        raise RuntimeError("no queues")

    def close(self) -> None:
        pass


def test_unexpected_errors_are_ais0105_without_internals(api: Api, api_database: str
                                                         ) -> None:
    with serve_in_thread(create_app(get_settings(), _BrokenDispatcher())) as base:
        headers = {"X-Auth-Token": api.creds["token"]}
        r = httpx.post(f"{base}{api.jobs}", json={"image": TINY}, headers=headers)
        body = assert_error(r, 500, "AIS.0105")
        assert "secret" not in r.text and "RuntimeError" not in r.text
        assert_error(httpx.get(f"{base}/readyz"), 503, "IDC.0503")
        metrics = httpx.get(f"{base}/metrics")  # a broken part does not break a scrape
        assert metrics.status_code == 200 and "idcard_jobs{" in metrics.text
    assert body["error_msg"] == "internal error"


def test_broker_down_is_idc0503_and_stores_nothing(fresh: Api, api_database: str) -> None:
    settings = get_settings().model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with serve_in_thread(create_app(settings)) as base:  # a CeleryDispatcher, no Redis
        headers = {"X-Auth-Token": fresh.creds["token"]}
        body = assert_error(httpx.get(f"{base}/readyz"), 503, "IDC.0503")
        assert body["error_msg"] == "not ready: broker unavailable"
        for path in (f"/v2/{fresh.pid}/ocr/id-card", fresh.jobs):
            r = httpx.post(f"{base}{path}", json={"image": TINY}, headers=headers)
            assert_error(r, 503, "IDC.0503")
    assert fresh.http.get(fresh.jobs).json()["jobs"] == []


def test_health_readiness_and_metrics(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    synced = api.sync({"image": TINY})  # at least one sync request and one failed job
    assert synced.json()["error_code"] == "AIS.0103", synced.text
    r = api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'idcard_jobs{status="failed"}' in text
    assert 'idcard_queue_depth{queue="interactive"}' in text
    assert 'idcard_queue_depth{queue="bulk"}' in text
    assert ('idcard_http_request_duration_seconds_count{method="POST",'
            'route="/v2/{project_id}/ocr/id-card",status="400"}') in text
    assert 'idcard_job_stage_seconds_count{priority="interactive",stage="queued"}' in text
    assert api.pid not in text  # route templates, never raw paths


def test_openapi_documents_every_route_and_flag(api: Api) -> None:
    doc = api.http.get("/openapi.json").json()
    paths = doc["paths"]
    base = "/v2/{project_id}/ocr/id-card"
    assert {base, f"{base}/jobs", f"{base}/jobs/{{job_id}}", f"{base}/jobs/{{job_id}}/events",
            f"{base}/batches", f"{base}/batches/{{batch_id}}",
            f"{base}/batches/{{batch_id}}/results", "/healthz", "/readyz",
            "/metrics"} <= set(paths)
    assert set(paths[f"{base}/jobs/{{job_id}}"]) == {"get", "delete"}
    request = doc["components"]["schemas"]["IdCardRequest"]
    assert set(FLAGS) | {"image", "url", "side"} == set(request["properties"])
    assert "422" not in json.dumps(paths)


def test_the_api_package_never_imports_the_worker() -> None:
    code = ("import sys, api.app, api.routes.ocr; "
            "bad = sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.')); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
