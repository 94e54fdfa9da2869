"""Redis restarted empty with jobs queued: every Celery message it held is lost (the
queues and the unacknowledged running one); the database remembers the jobs and the
reconciler, on beat's schedule, sends them again. All end succeeded, once each."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from ..fault_support import FaultStack, PrivateRedis, fault_stack
from ..worker_support import wait_until

DEADLINE = 4.0  # IDCARD_JOB_DEADLINE_SECONDS: beat reconciles every 2 s
JOBS = 6


@pytest.fixture(scope="module")
def stack(fault_db: str, redis_server: PrivateRedis,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    tag = secrets.token_hex(3)
    with fault_stack(fault_db, redis_server, tmp_path_factory.mktemp("redis-restart"),
                     job_deadline_seconds=DEADLINE, webhook_max_attempts=2,
                     webhook_backoff_base_seconds=0.2) as st:
        # Recognition sleeps 1 s first, so that jobs are surely queued and one running.
        first = st.start_worker(f"beat-{tag}", slow_seconds=1.0, beat=True, wait=False)
        second = st.start_worker(f"second-{tag}", "interactive,bulk", slow_seconds=1.0,
                                 wait=False)
        first.wait_ready(st.celery, timeout=90)
        second.wait_ready(st.celery, timeout=90)
        yield st


def test_redis_restarted_with_jobs_queued_loses_no_job(stack: FaultStack,
                                                        card_b64: str) -> None:
    ids = [stack.api.submitted({"image": card_b64, "priority": "bulk"})
           for _ in range(JOBS)]
    wait_until(lambda: any(j.status == "running" for j in stack.jobs(ids).values()), 60,
               "a job to start")

    stack.redis.kill()
    # With Redis dead nothing can start: these are the jobs whose messages die with it
    # (the queued ones, and the running ones, whose unacknowledged messages Redis held).
    unfinished = {j for j, row in stack.jobs(ids).items()
                  if row.status in ("queued", "running")}
    assert stack.api.submit({"image": card_b64}).json()["error_code"] == "IDC.0503"
    stack.redis.start()  # empty: nothing on disk
    assert len(unfinished) >= JOBS - 2, "too few jobs were still queued at the restart"

    stack.wait_ended(ids, timeout=150)
    stack.assert_ended_once(ids)
    for job_id in unfinished:
        requeued = [e for e in stack.events(job_id)
                    if e.event == "enqueued" and e.actor == "system:reconciler"]
        assert requeued and requeued[0].detail["reason"] == "stuck", (
            job_id, stack.event_names(job_id))
    assert all(w.proc.poll() is None for w in stack.workers), stack.logs()

    # The API and the workers are connected to the new Redis: a new job just runs.
    r = stack.api.http.get("/readyz")
    assert r.status_code == 200, r.text
    after = stack.api.submitted({"image": card_b64})
    stack.wait_ended([after], timeout=60)
    stack.assert_ended_once([after])
    assert [e.actor for e in stack.events(after) if e.event == "enqueued"] == ["api:token"]
