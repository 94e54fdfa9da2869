"""The Celery tasks: thin wrappers that give ids to ``worker.jobrunner`` and
``worker.delivery`` and turn their answers into retries and follow-up messages.

Task names and queues are the contract of ``idcard.queues``; arguments are ids only.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from idcard.db import session_scope
from idcard.jobs import purge_expired
from idcard.queues import (
    QUEUE_WEBHOOKS,
    TASK_DELIVER_WEBHOOK,
    TASK_PURGE,
    TASK_RECOGNIZE,
    TASK_RECONCILE,
)
from worker.celery_app import app, broker_job_ids
from worker.delivery import deliver
from worker.jobrunner import DB_UNAVAILABLE, reconcile, run_job, with_db_retry, worker_actor

log = logging.getLogger(__name__)

# Recognition takes seconds; a job still running after this is stuck on something.
# Soft: the task gets an exception and fails the job (AIS.0105); hard: the process is
# killed. Both well under IDCARD_JOB_DEADLINE_SECONDS (default 600).
RECOGNIZE_SOFT_TIME_LIMIT = 120
RECOGNIZE_TIME_LIMIT = 150
PURGE_BATCH = 500

# While the database is unavailable: retry with exponential backoff (capped, jittered)
# for as long as it takes; the message stays in Redis meanwhile.
_DB_RETRY: dict[str, Any] = {
    "autoretry_for": DB_UNAVAILABLE,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
}


def _send_webhook(job_id: str, event_id: str) -> None:
    deliver_webhook.apply_async(args=[job_id, event_id], queue=QUEUE_WEBHOOKS)


@app.task(name=TASK_RECOGNIZE, bind=True, soft_time_limit=RECOGNIZE_SOFT_TIME_LIMIT,
          time_limit=RECOGNIZE_TIME_LIMIT, **_DB_RETRY)
def recognize_job(self: Task, job_id: str) -> str | None:
    # A redelivered message (its worker died) or our own retry (the database failed
    # mid-job) may restart the job it left 'running'.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    run = run_job(job_id, worker_actor(), restart=redelivered or self.request.retries > 0)
    if run.webhook_event_id is not None:
        try:
            _send_webhook(job_id, run.webhook_event_id)
        except Exception as exc:  # noqa: BLE001 - the reconciler sends it later
            log.warning("job %s: webhook not enqueued (%s)", job_id, type(exc).__name__)
    return run.status


@app.task(name=TASK_DELIVER_WEBHOOK, bind=True, **_DB_RETRY)
def deliver_webhook(self: Task, job_id: str, event_id: str) -> str:
    outcome = deliver(job_id, event_id)
    if outcome.retry_in is not None:
        # The attempt count lives in SQL (IDCARD_WEBHOOK_MAX_ATTEMPTS), not in Celery.
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.state


@app.task(name=TASK_RECONCILE, **_DB_RETRY)
def reconcile_stuck_jobs() -> dict[str, int]:
    present, too_long = broker_job_ids(app)
    report = reconcile(
        lambda job_id, queue: recognize_job.apply_async(args=[job_id], queue=queue),
        _send_webhook,
        in_broker=present,
        skip_queues=too_long,
    )
    if too_long:
        log.warning("reconciler: queued jobs of %s not checked (queue too long)",
                    ", ".join(sorted(too_long)))
    return vars(report)


@app.task(name=TASK_PURGE, **_DB_RETRY)
def purge_expired_results() -> int:
    # In batches, each its own short transaction.
    total = 0
    while True:
        def batch() -> int:
            with session_scope() as session:
                return purge_expired(session, limit=PURGE_BATCH)

        n = with_db_retry(batch)
        total += n
        if n < PURGE_BATCH:
            return total
