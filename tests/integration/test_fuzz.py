"""Hostile input never crashes anything.

- Schemathesis fuzzes every operation of the live API's ``/openapi.json``, with data
  that fits the schema and data that does not, authenticated for the real project:
  no 5xx, every 4xx is ``{"error_code", "error_msg"}``, and answers conform to the
  documented status codes, content types and schemas.
- Explicit hostile requests: a 20 MB body, 10k-deep JSON, wrong content types, and a
  slow client that dribbles its body byte by byte while others are served.

Bounded for the normal suite (``FUZZ_EXAMPLES`` per operation and mode); set
``IDCARD_FUZZ_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from idcard.db import session_scope
from idcard.projects import create_project

from .api_support import TINY, Api, assert_error

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra installs it")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.fuzz

FUZZ_EXAMPLES = int(os.environ.get("IDCARD_FUZZ_EXAMPLES", "30"))
ERROR_KEYS = {"error_code", "error_msg"}


@pytest.fixture(scope="module")
def fuzzed(server: str) -> Api:
    """A project of its own, unlimited (the fuzzer must not hit the rate limit)."""
    with session_scope() as session:
        return Api(server, create_project(session, "fuzz", rate_limit_per_minute=0))


@pytest.fixture(scope="module")
def real_ids(fuzzed: Api) -> dict[str, str]:
    """A finished job and a batch of the fuzzed project: the id routes are also fuzzed
    on objects that exist, not only on 404s."""
    job_id = fuzzed.submitted({"image": TINY})
    fuzzed.wait(job_id)
    r = fuzzed.http.post(fuzzed.batches, json={"items": [{"image": TINY}]})
    assert r.status_code == 202, r.text
    return {"job_id": job_id, "batch_id": r.json()["batch_id"]}


def _error_body_problem(response: Any) -> str | None:
    if response.status_code >= 500:
        return f"server error {response.status_code}: {response.text[:200]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:200]}"
        if not isinstance(body, dict) or set(body) != ERROR_KEYS or not all(
                isinstance(body[k], str) and body[k] for k in ERROR_KEYS):
            return f"{response.status_code} body is not the error shape: {body!r}"[:300]
        if "Traceback" in body["error_msg"]:
            return "a traceback in error_msg"
    return None


CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_operation(operation: Any, mode: Any, base: str, headers: dict[str, str],
                   path_parameters: dict[str, str] | None, statuses: Counter[int],
                   failures: list[str]) -> int:
    """Runs up to FUZZ_EXAMPLES cases of one operation in one generation mode; the
    number run. Failures are collected, not raised: one run reports them all."""
    label = f"{mode.value} {operation.label}"
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    count = 0

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal count
        count += 1
        response = case.call(base_url=base, headers=headers, timeout=60)
        statuses[response.status_code] += 1
        problem = _error_body_problem(response)
        if problem is None and mode.is_positive:
            try:
                case.validate_response(response, checks=CHECKS)
            except AssertionError as exc:  # schemathesis' FailureGroup
                problem = str(exc).splitlines()[0][:300]
        if problem is not None:
            failures.append(f"{label}: {problem} <- {case.as_curl_command()[:400]}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to break: no parameters and no body (/healthz), or every parameter
        # fixed (project_id) and the rest free-form.
        if mode.is_positive:
            raise
    return count


def test_fuzz_every_operation_from_the_openapi_schema(fuzzed: Api, server: str,
                                                      real_ids: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12  # 9 /v2 operations, /healthz, /readyz, /metrics
    headers = {"X-Auth-Token": fuzzed.creds["token"]}
    ran: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for operation in operations:
        path_parameters = ({"project_id": fuzzed.pid}
                           if "{project_id}" in operation.path else None)
        for mode in (schemathesis.GenerationMode.POSITIVE,
                     schemathesis.GenerationMode.NEGATIVE):
            ran[f"{mode.value} {operation.label}"] = fuzz_operation(
                operation, mode, server, headers, path_parameters, statuses, failures)
        existing = {k: v for k, v in real_ids.items() if f"{{{k}}}" in operation.path}
        if existing:
            ran[f"existing {operation.label}"] = fuzz_operation(
                operation, schemathesis.GenerationMode.POSITIVE, server, headers,
                {**(path_parameters or {}), **existing}, statuses, failures)

    total = sum(ran.values())
    print(f"\nfuzz: {total} cases over {len(ran)} operation/mode pairs, "
          f"statuses {dict(sorted(statuses.items()))}, {len(failures)} failures; "
          f"per pair {dict(ran)}")
    assert not failures, "\n".join(failures[:20])
    assert all(n for label, n in ran.items() if label.startswith("positive")), ran
    assert not any(status >= 500 for status in statuses)


# --- explicit hostile requests --------------------------------------------------------


def _sync_url(api: Api) -> str:
    return f"{api.http.base_url}/v2/{api.pid}/ocr/id-card"


def test_a_20_mb_body_is_ais0103_quickly(fuzzed: Api) -> None:
    body = b'{"image": "' + b"A" * (20 * 1024 * 1024) + b'"}'
    started = time.monotonic()
    r = httpx.post(_sync_url(fuzzed), content=body, timeout=60,
                   headers={"X-Auth-Token": fuzzed.creds["token"],
                            "Content-Type": "application/json"})
    assert_error(r, 400, "AIS.0103")
    assert time.monotonic() - started < 5
    # Chunked (no Content-Length): refused while streaming, at the limit.
    chunks = (body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20))
    r = httpx.post(_sync_url(fuzzed), content=chunks, timeout=60,
                   headers={"X-Auth-Token": fuzzed.creds["token"],
                            "Content-Type": "application/json"})
    assert_error(r, 400, "AIS.0103")


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deep_json_is_ais0101(fuzzed: Api, depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth,
                 b'{"image": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
                 b'{"image": "x", "side": ' + b"[" * depth + b"]" * depth + b"}"):
        r = fuzzed.http.post(f"/v2/{fuzzed.pid}/ocr/id-card", content=body,
                             headers={"Content-Type": "application/json"})
        assert_error(r, 400, "AIS.0101")
        r = fuzzed.http.post(fuzzed.batches, content=body,
                             headers={"Content-Type": "application/json"})
        assert_error(r, 400, "AIS.0101")


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/xml", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded", "application/jsonx", "json", "*/*",
    "application/json\x7f", "application/bson",
])
def test_wrong_content_types_are_ais0101(fuzzed: Api, content_type: str | None) -> None:
    headers = {"X-Auth-Token": fuzzed.creds["token"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    for path in (f"/v2/{fuzzed.pid}/ocr/id-card", fuzzed.jobs, fuzzed.batches):
        r = httpx.post(f"{fuzzed.http.base_url}{path}", content=b'{"image": "x"}',
                       headers=headers)
        assert_error(r, 400, "AIS.0101")


def test_odd_but_valid_json_content_types_are_accepted(fuzzed: Api) -> None:
    for content_type in ("application/json; charset=utf-8", "APPLICATION/JSON",
                         "application/json;charset=UTF-8"):
        r = fuzzed.http.post(f"/v2/{fuzzed.pid}/ocr/id-card", content=b'{"image": "@@"}',
                             headers={"Content-Type": content_type})
        assert_error(r, 400, "AIS.0102")  # parsed: the image itself is refused


def test_hostile_headers_and_paths(fuzzed: Api) -> None:
    base, token = str(fuzzed.http.base_url), fuzzed.creds["token"]
    cases = [
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs/{'x' * 5000}", {}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs/%00%ff", {}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs?limit=1e9", {}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs?limit=" + "9" * 5000, {}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs?cursor=" + "%ff" * 100, {}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs?created_after=9999-99-99", {}),
        ("GET", f"/v2/{'%00' * 10}/ocr/id-card/jobs", {}),
        ("POST", f"/v2/{fuzzed.pid}/ocr/id-card/jobs", {"Idempotency-Key": "\u00e9" * 10}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs", {"X-Auth-Token": "\u00ff" * 300}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs",
         {"X-Auth-Token": "", "Authorization": "SDK-HMAC-SHA256 " + "," * 10_000}),
        ("GET", f"/v2/{fuzzed.pid}/ocr/id-card/jobs",
         {"X-Auth-Token": "", "Authorization": "SDK-HMAC-SHA256 Access=\u00ff, "
          "SignedHeaders=host;x-sdk-date, Signature=" + "0" * 64, "X-Sdk-Date": "\u00ff"}),
    ]
    for method, path, extra in cases:
        headers = {"X-Auth-Token": token, "Content-Type": "application/json", **extra}
        encoded = {k: v.encode("latin-1") for k, v in headers.items()}
        r = httpx.request(method, base + path, headers=encoded, content=b'{"image": "x"}')
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert set(r.json()) == ERROR_KEYS, r.text


def test_a_slow_client_does_not_block_others(fuzzed: Api) -> None:
    """A client dribbling its body one byte at a time (bounded to ~4 s) while other
    requests are served at full speed; then its request completes normally."""
    host, port = fuzzed.http.base_url.host, fuzzed.http.base_url.port
    body = json.dumps({"image": "@@not base64@@"}).encode()
    done = threading.Event()
    answer: dict[str, bytes] = {}

    def dribble() -> None:
        with socket.create_connection((host, port), timeout=30) as sock:
            head = (f"POST /v2/{fuzzed.pid}/ocr/id-card HTTP/1.1\r\nHost: {host}\r\n"
                    f"X-Auth-Token: {fuzzed.creds['token']}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            sock.sendall(head)
            for i in range(len(body)):
                sock.sendall(body[i:i + 1])
                time.sleep(4.0 / len(body))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            answer["raw"] = b"".join(chunks)
        done.set()

    thread = threading.Thread(target=dribble, daemon=True)
    started = time.monotonic()
    thread.start()
    latencies = []
    while not done.is_set() and time.monotonic() - started < 15:
        t0 = time.monotonic()
        r = fuzzed.http.get(fuzzed.jobs, params={"limit": 1})
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200
        time.sleep(0.05)
    thread.join(10)
    assert done.is_set(), "the slow client never got its answer"
    assert time.monotonic() - started >= 3.5  # it really was slow
    assert len(latencies) >= 20 and max(latencies) < 2.0, latencies  # never waits ~4 s
    status_line, _, rest = answer["raw"].partition(b"\r\n")
    assert b" 400 " in status_line
    assert b'"AIS.0102"' in rest
