"""A webhook receiver that refuses connections, then answers 503, then comes back: the
delivery is retried on the configured schedule and arrives; one that never comes back
is marked failed after the last attempt. Every attempt is in the database and the job's
``webhook`` object in the API says where the delivery stands."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from idcard.webhooks import event_id_for

from ..fault_support import FaultStack, PrivateRedis, fault_stack
from ..live_server import free_port
from ..worker_support import local_server, send, wait_until

MAX_ATTEMPTS = 4
BACKOFF = 1.0  # seconds before attempt 2; then 2 s, 4 s
NOT_AN_IMAGE = base64.b64encode(b"not an image").decode()  # fails at once: job.failed


@pytest.fixture(scope="module")
def stack(fault_db: str, redis_server: PrivateRedis,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(fault_db, redis_server, tmp_path_factory.mktemp("webhooks"),
                     webhook_max_attempts=MAX_ATTEMPTS,
                     webhook_backoff_base_seconds=BACKOFF,
                     webhook_timeout_seconds=2) as st:
        st.start_worker(f"hooks-{secrets.token_hex(3)}")
        yield st


def _attempts(stack: FaultStack, job_id: str) -> list[tuple[int, int | None, str | None,
                                                            str]]:
    return [(d.attempt, d.status_code, d.error, d.state) for d in stack.deliveries(job_id)]


def _webhook(stack: FaultStack, job_id: str) -> dict[str, Any]:
    view = stack.api.job(job_id).json()
    assert set(view["webhook"]) == {"state", "attempts", "last_attempt_at",
                                    "last_status_code", "last_error", "next_attempt_at"}
    return view["webhook"]


def test_receiver_down_then_back_gets_the_webhook(stack: FaultStack, card_b64: str) -> None:
    port = free_port()  # nothing listens here yet: connections are refused
    callback = f"http://127.0.0.1:{port}/hook"
    job_id = stack.api.submitted({"image": card_b64, "callback_url": callback})
    assert _webhook(stack, job_id)["state"] == "pending"  # before the job has ended

    wait_until(lambda: stack.deliveries(job_id), 60, "the first delivery attempt")
    hook = _webhook(stack, job_id)
    assert stack.api.job(job_id).json()["status"] == "succeeded"
    assert (hook["state"], hook["last_status_code"], hook["last_error"]) == (
        "pending", None, "connect error")
    assert hook["attempts"] >= 1 and hook["next_attempt_at"] is not None

    answers = iter([503])  # back, but not healthy yet: one 503, then 200
    with local_server(port) as receiver:
        receiver.routes["/hook"] = lambda h: send(h, next(answers, 200))
        wait_until(lambda: stack.jobs([job_id])[job_id].webhook_state == "delivered",
                   30, "the webhook delivered")

        # Deliveries go on afterwards: the next job's webhook arrives at the first try.
        later = stack.api.submitted({"image": NOT_AN_IMAGE, "callback_url": callback})
        wait_until(lambda: stack.jobs([later])[later].webhook_state == "delivered", 30,
                   "the next webhook")

    rows = _attempts(stack, job_id)
    refused = [r for r in rows if r[2] == "connect error"]
    assert refused and rows[:len(refused)] == refused  # refused while down...
    assert [r[1:] for r in rows[len(refused):]] == [  # ...then 503, then delivered
        (503, None, "pending"), (200, None, "delivered")]
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) <= MAX_ATTEMPTS
    hook = _webhook(stack, job_id)
    assert hook == {**hook, "state": "delivered", "attempts": len(rows),
                    "last_status_code": 200, "last_error": None, "next_attempt_at": None}
    assert _attempts(stack, later) == [(1, 200, None, "delivered")]

    bodies = [json.loads(r.body) for r in receiver.received if r.path == "/hook"]
    assert [b["job_id"] for b in bodies] == [job_id, job_id, later]
    assert {b["event_id"] for b in bodies[:2]} == {event_id_for(job_id, "job.succeeded")}
    names = stack.event_names(job_id)
    assert names.count("webhook_attempt") == len(rows) and "webhook_delivered" in names


def test_receiver_that_never_recovers_ends_failed_and_visible(stack: FaultStack) -> None:
    with local_server() as receiver:
        receiver.routes["/hook"] = lambda h: send(h, 503, b"down for maintenance")
        job_id = stack.api.submitted({"image": NOT_AN_IMAGE,
                                      "callback_url": receiver.url("/hook")})
        wait_until(lambda: stack.jobs([job_id])[job_id].webhook_state == "failed",
                   30, "the webhook given up")

    assert _attempts(stack, job_id) == [
        *[(n, 503, None, "pending") for n in range(1, MAX_ATTEMPTS)],
        (MAX_ATTEMPTS, 503, None, "failed")]
    rows = stack.deliveries(job_id)
    gaps = [(b.at - a.at).total_seconds() for a, b in pairwise(rows)]
    assert all(gap >= BACKOFF * 2 ** i for i, gap in enumerate(gaps)), gaps  # backoff
    view = stack.api.job(job_id).json()
    assert (view["status"], view["error_code"]) == ("failed", "AIS.0102")
    assert view["webhook"] == {
        "state": "failed", "attempts": MAX_ATTEMPTS,
        "last_attempt_at": view["webhook"]["last_attempt_at"], "last_status_code": 503,
        "last_error": None, "next_attempt_at": None}
    assert view["webhook"]["last_attempt_at"] is not None
    listed = stack.api.http.get(stack.api.jobs, params={"limit": 5}).json()["jobs"]
    assert [j["webhook"] for j in listed if j["job_id"] == job_id] == [view["webhook"]]
    names = stack.event_names(job_id)
    assert names.count("webhook_attempt") == MAX_ATTEMPTS and "webhook_failed" in names
    assert len(receiver.received) == MAX_ATTEMPTS  # not one attempt more
