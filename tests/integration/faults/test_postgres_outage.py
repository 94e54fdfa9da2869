"""PostgreSQL stopped (``pg_ctl stop -m fast``) while jobs are queued and one is being
recognised, then started again: the API answers every route with 503 IDC.0503 and
/readyz says not ready, the workers retry with backoff without exiting, and every job
submitted before the outage ends succeeded, once, when the database is back."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import install_error_handlers

from ..api_support import assert_error
from ..fault_support import FaultStack, PrivatePostgres, PrivateRedis, fault_stack
from ..worker_support import wait_until

# The outage lasts until the worker has retried twice (the in-flight job and a queued
# one), and at least this long: longer than the worker's own quick retries (3.5 s).
MIN_OUTAGE_SECONDS = 5.0
RETRY_LOG = "idcard.recognize_job["


@pytest.fixture(scope="module")
def stack(fault_db: str, redis_server: PrivateRedis,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(fault_db, redis_server, tmp_path_factory.mktemp("pg-outage"),
                     webhook_max_attempts=2, webhook_backoff_base_seconds=0.2) as st:
        # Recognition sleeps 2 s first: the outage begins while a job is in flight.
        st.start_worker(f"patient-{secrets.token_hex(3)}", slow_seconds=2.0)
        yield st


def _retries(stack: FaultStack) -> int:
    # Celery logs "Task idcard.recognize_job[<id>] retry: Retry in <n>s: OperationalError"
    return sum(line.count(RETRY_LOG) for line in stack.workers[0].log_text().splitlines()
               if "retry: Retry in" in line)


def test_postgres_outage_is_503_and_jobs_resume(stack: FaultStack, private_pg: PrivatePostgres,
                                                card_b64: str) -> None:
    api = stack.api
    ids = [api.submitted({"image": card_b64}) for _ in range(3)]
    wait_until(lambda: stack.jobs(ids)[ids[0]].status == "running", 60, "the first job")

    private_pg.stop("fast")
    t0 = time.monotonic()
    try:
        # Every kind of route: a read, a submission, a list, the sync route, a cancel,
        # the audit trail; never a 500.
        assert_error(api.job(ids[1]), 503, "IDC.0503")
        assert_error(api.submit({"image": card_b64}), 503, "IDC.0503")
        assert_error(api.http.get(api.jobs), 503, "IDC.0503")
        assert_error(api.sync({"image": card_b64}), 503, "IDC.0503")
        assert_error(api.http.delete(f"{api.jobs}/{ids[2]}"), 503, "IDC.0503")
        assert_error(api.http.get(f"{api.jobs}/{ids[0]}/events"), 503, "IDC.0503")
        body = assert_error(api.http.get("/readyz"), 503, "IDC.0503")
        assert "database" in body["error_msg"]
        assert api.http.get("/healthz").status_code == 200
        # The in-flight job finishes recognising and cannot record it; the next job
        # cannot start. The worker retries both later (Celery retry with backoff).
        wait_until(lambda: _retries(stack) >= 2, 60, "two retries by the worker",
                   interval=0.2)
        time.sleep(max(0.0, MIN_OUTAGE_SECONDS - (time.monotonic() - t0)))
        assert all(w.proc.poll() is None for w in stack.workers), stack.logs()
    finally:
        private_pg.start()

    stack.wait_ended(ids, timeout=150)
    stack.assert_ended_once(ids)
    assert all(w.proc.poll() is None for w in stack.workers), stack.logs()
    # The job in flight ran again after the outage (its first outcome was never
    # recorded); the others started once.
    rows = stack.jobs(ids)
    assert rows[ids[0]].attempts == 2 and "retried" in stack.event_names(ids[0])
    assert [rows[j].attempts for j in ids[1:]] == [1, 1]
    wait_until(lambda: api.http.get("/readyz").status_code == 200, 30, "ready again")
    view = api.job(ids[0]).json()
    assert view["status"] == "succeeded" and view["result"]["result"]["name"]


@pytest.mark.parametrize("error", [
    OperationalError("SELECT 1", {}, Exception("connection refused")),
    InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    PoolTimeoutError("QueuePool limit reached, connection timed out"),
], ids=["operational", "interface", "pool-timeout"])
def test_every_database_unavailable_error_is_a_clear_503(error: Exception) -> None:
    # Whatever form the outage takes when it reaches a route (refused, a connection the
    # server closed under a query, a pool with no free connection), in a dependency or
    # the route itself.
    def session() -> Iterator[None]:
        raise error
        yield  # a dependency with teardown, as api.deps.get_session

    def route() -> None:
        raise error

    app = FastAPI()
    install_error_handlers(app)
    app.add_api_route("/in-route", route)
    app.add_api_route("/in-dependency", lambda: None, dependencies=[Depends(session)])

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path)

    for path in ("/in-route", "/in-dependency"):
        r = anyio.run(get, path)
        assert_error(r, 503, "IDC.0503")
        assert r.headers["Retry-After"] == "5"
