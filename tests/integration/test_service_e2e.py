"""The whole service as deployed: ``idcard-ocr serve`` (Celery dispatcher) in a process,
a real Celery worker process on every queue, Redis (a database of its own), PostgreSQL,
and a local webhook receiver.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import select

from idcard.db import session_scope
from idcard.inputs import stash_key
from idcard.migrate import upgrade
from idcard.models import Job, JobInput
from idcard.projects import create_project
from idcard.settings import get_settings
from idcard.webhooks import SIGNATURE_HEADER, verify

from .conftest import TEST_SECRET_KEY, throwaway_postgres
from .live_server import free_port, serve_in_subprocess
from .worker_support import (
    LocalServer,
    WorkerProcess,
    celery_worker,
    claimed_redis_db,
    local_server,
    send,
    wait_until,
)

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Service:
    http: httpx.Client
    project_id: str
    webhook_secret: str
    worker: WorkerProcess
    hooks: LocalServer
    api_log: Path
    redis_url: str
    env: dict[str, str]
    token: str

    @property
    def base(self) -> str:
        return f"/v2/{self.project_id}/ocr/id-card"

    def submit(self, body: dict[str, Any]) -> str:
        r = self.http.post(f"{self.base}/jobs", json=body)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.http.get(f"{self.base}/jobs/{job_id}").json()

    def wait(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        try:
            return wait_until(lambda: (v := self.job(job_id))["status"] in TERMINAL and v,
                              timeout, f"job {job_id}", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker ---\n{self.worker.log_text()}") from None


@pytest.fixture(scope="module")
def service(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    with claimed_redis_db() as redis_url, throwaway_postgres(postgres_admin_url) as db_url, \
            pytest.MonkeyPatch.context() as mp, local_server() as hooks:
        upgrade(db_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDCARD_")}
        env.update({
            "IDCARD_DATABASE_URL": db_url,
            "IDCARD_REDIS_URL": redis_url,
            "IDCARD_SECRET_KEY": TEST_SECRET_KEY,
            "IDCARD_URL_ALLOW_HOSTS": "127.0.0.1",  # the webhook receiver
            "IDCARD_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
        })
        for key in ("IDCARD_DATABASE_URL", "IDCARD_SECRET_KEY"):
            mp.setenv(key, env[key])
        get_settings.cache_clear()
        with session_scope() as session:
            creds = create_project(session, "bank")

        hooks.routes["/hook"] = lambda h: send(h, 200, b"ok")
        worker = celery_worker(f"e2e-{secrets.token_hex(3)}@localhost",
                               "interactive,bulk,webhooks,maintenance", env, logs)
        ping = Celery("e2e-ping", broker=redis_url)
        port = free_port()
        serve = [sys.executable, "-m", "idcard.cli", "serve", "--port", str(port),
                 "--log-level", "warning"]
        try:
            worker.start()
            worker.wait_ready(ping)
            with serve_in_subprocess(serve, env, port, logs / "api.log") as base, \
                    httpx.Client(base_url=base, timeout=120,
                                 headers={"X-Auth-Token": creds["token"]}) as http:
                yield Service(http, creds["project_id"], creds["webhook_secret"], worker,
                              hooks, logs / "api.log", redis_url, env, creds["token"])
        finally:
            worker.stop()
            ping.close()
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def card(make_case) -> Any:
    return make_case(1, "clean", "front")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ready_with_database_and_broker(service: Service) -> None:
    r = service.http.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_sync_call_through_the_worker(service: Service, card: Any) -> None:
    r = service.http.post(service.base, json={"image": b64(card.image_bytes)})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": card.expected}
    r = service.http.post(service.base, json={"image": b64(b"\x00not an image")})
    assert r.status_code == 400 and r.json()["error_code"] == "AIS.0102"
    # The photos went through Redis (idcard.inputs), not the database, and are gone.
    with session_scope() as session:
        jobs = session.scalars(select(Job).order_by(Job.created_at.desc()).limit(2)).all()
        assert [j.input_store for j in jobs] == ["redis", "redis"]
        assert not session.scalars(select(JobInput)).all()
    held = redis.Redis.from_url(service.redis_url)
    # Deleted by the worker right after it has told the API (so maybe just after this).
    wait_until(lambda: not list(held.scan_iter(match=stash_key("*"))), 10, "stash empty")
    held.close()


def test_a_sync_call_that_times_out_keeps_its_photo_and_the_job_goes_on(
    service: Service, card: Any, tmp_path: Path,
) -> None:
    """IDC.0408 for a photo held in Redis: before answering, the API moves it into the
    database (the Redis copy would expire), so the job runs whenever a worker is free."""
    port = free_port()
    serve = [sys.executable, "-m", "idcard.cli", "serve", "--port", str(port),
             "--log-level", "warning"]
    env = {**service.env, "IDCARD_SYNC_TIMEOUT_SECONDS": "1"}
    worker = service.worker.proc
    assert worker is not None
    held = redis.Redis.from_url(service.redis_url)
    with serve_in_subprocess(serve, env, port, tmp_path / "api.log") as base:
        os.killpg(worker.pid, signal.SIGSTOP)  # no worker takes the job meanwhile
        try:
            r = httpx.post(f"{base}{service.base}", json={"image": b64(card.image_bytes)},
                           headers={"X-Auth-Token": service.token}, timeout=30)
            assert r.status_code == 504 and r.json()["error_code"] == "IDC.0408", r.text
            job_id = r.json()["error_msg"].split("job ")[1].split(":")[0]
            with session_scope() as session:
                job = session.get(Job, job_id)
                assert job is not None and job.status == "queued"
                assert job.input_store is None  # in the database now
                assert session.get(JobInput, job_id) is not None
            assert held.get(stash_key(job_id)) is None
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
    view = service.wait(job_id)
    assert view["status"] == "succeeded" and view["result"] == {"result": card.expected}
    with session_scope() as session:
        assert session.get(JobInput, job_id) is None  # deleted when the job ended
    held.close()


def test_async_job_and_its_signed_webhook(service: Service, card: Any) -> None:
    callback = service.hooks.url("/hook")
    job_id = service.submit({"image": b64(card.image_bytes), "callback_url": callback,
                             "client_reference": "e2e"})
    view = service.wait(job_id)
    assert view["status"] == "succeeded", view
    assert view["result"] == {"result": card.expected}

    def delivered() -> Any:
        return [r for r in service.hooks.received if r.path == "/hook"
                and json.loads(r.body).get("job_id") == job_id]

    hook = wait_until(delivered, 30, "the webhook")[0]
    headers = {k.lower(): v for k, v in hook.headers.items()}
    assert verify(service.webhook_secret, hook.body, headers[SIGNATURE_HEADER.lower()])
    assert not verify("another secret", hook.body, headers[SIGNATURE_HEADER.lower()])
    body = json.loads(hook.body)
    assert body["event"] == "job.succeeded" and body["status"] == "succeeded"
    assert body["project_id"] == service.project_id and body["event_id"]
    assert body["result"] == view["result"]


def test_bulk_batch(service: Service, card: Any) -> None:
    items = [{"image": b64(card.image_bytes), "client_reference": "b-0"},
             {"image": b64(b"BMnot really"), "client_reference": "b-1"}]
    r = service.http.post(f"{service.base}/batches", json={"items": items})
    assert r.status_code == 202, r.text
    status_url = r.json()["status_url"]
    wait_until(lambda: service.http.get(status_url).json()["done"], 90, "the batch")
    counts = service.http.get(status_url).json()["counts"]
    assert counts["succeeded"] == 1 and counts["failed"] == 1
    lines = [json.loads(x) for x in
             service.http.get(r.json()["results_url"]).text.splitlines()]
    assert [x["client_reference"] for x in lines] == ["b-0", "b-1"]
    assert lines[0]["response"] == {"result": card.expected}
    assert lines[1]["response"]["error_code"] == "AIS.0102"


def test_an_interactive_job_overtakes_a_bulk_backlog(service: Service, card: Any) -> None:
    """One worker process consuming ``-Q interactive,bulk``: kombu's Redis transport
    alternates the order in which it polls the queues after each message, so after a
    bulk job the interactive queue is read first. What is guaranteed is therefore that
    an interactive job waits for at most the job in progress, not for the backlog."""
    image = b64(card.image_bytes)
    bulk = [service.submit({"image": image, "priority": "bulk"}) for _ in range(4)]
    wait_until(lambda: service.job(bulk[0])["status"] != "queued", 30, "the first bulk job")
    urgent = service.submit({"image": image, "priority": "interactive"})
    done = {job_id: service.wait(job_id) for job_id in [urgent, *bulk]}
    order = sorted(done, key=lambda j: done[j]["started_at"])
    position = order.index(urgent)
    # Strict FIFO would start it last (5th); it is the next job, or the one after if the
    # first bulk job ended just before it arrived.
    assert position <= 2, f"interactive job started {position + 1}th of {len(order)}"
    assert all(v["status"] == "succeeded" for v in done.values())


def test_queue_depth_and_job_metrics(service: Service) -> None:
    text = service.http.get("/metrics").text
    assert 'idcard_queue_depth{queue="bulk"} 0.0' in text
    assert 'idcard_jobs{status="succeeded"}' in text  # SQL counts
