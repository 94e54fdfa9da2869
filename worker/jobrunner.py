"""The processing of one job, independent of Celery.

``run_job`` is what a Celery task calls, and what the embedded mode (API and worker in one
process, SQLite, no Redis) calls from a thread. ``reconcile`` finds jobs whose message was
lost and hands them to an ``enqueue`` callback, so either mode can use it.

Each database transaction is short: none is open while an image downloads or is
recognised (SQLite would stay locked). Logs carry job ids, codes and timings, never a
result, a URL or image bytes.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from idcard import crypto, jobs
from idcard.audit import record_event
from idcard.db import session_scope
from idcard.errors import ErrorCode, ServiceError
from idcard.inputs import STORE_REDIS, shared_redis, worker_stash
from idcard.models import (
    EventType,
    Job,
    JobEvent,
    JobStatus,
    WebhookDelivery,
    WebhookState,
    utcnow,
)
from idcard.options import RecognitionOptions
from idcard.queues import done_channel
from idcard.settings import get_settings
from idcard.webhooks import event_id_for
from worker.fetcher import fetch_url

log = logging.getLogger(__name__)

# A job that has been started this many times without ending (each time its worker died)
# is failed rather than tried again: it is probably what kills the workers.
MAX_JOB_ATTEMPTS = 3
# The database is down or the connection dropped: worth retrying, unlike any other error.
DB_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
GENERIC_FAILURE = "recognition failed inside the service"
# Pending webhooks older than this are not looked at by the reconciler any more.
WEBHOOK_SWEEP_WINDOW = timedelta(hours=24)

_SCORE_KEY = re.compile(r"[a-z_]{1,40}_score")  # what idcard.jobs accepts in ``scores``
_FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
T = TypeVar("T")


class Notifier(Protocol):
    """Told when a job has ended: ``notifier(job_id, final_status)``. Must not raise."""

    def __call__(self, job_id: str, status: str) -> None: ...


@dataclass(frozen=True)
class JobRun:
    """What ``run_job`` did.

    ``status`` is the job's status afterwards (None: no such job). ``webhook_event_id`` is
    set when a webhook is due: deliver it with ``worker.delivery.deliver(job_id, it)``.
    ``ran`` says whether this call did the work (False: cancelled, already finished, or
    running elsewhere).
    """

    job_id: str
    status: str | None
    webhook_event_id: str | None = None
    ran: bool = False


@lru_cache(maxsize=1)
def worker_actor() -> str:
    """The audit actor of this host's worker, e.g. ``worker:ocr-3``."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:100] or "unknown"
    return f"worker:{host}"


# --- completion signal -----------------------------------------------------------------

def notify_done(job_id: str, status: str) -> None:
    """Publish ``status`` on ``done_channel(job_id)`` in Redis (the API's synchronous route
    waits on it). Best effort: the database stays the truth, so a Redis error is logged
    and swallowed."""
    try:
        shared_redis(get_settings().redis_url).publish(done_channel(job_id), status)
    except Exception as exc:  # noqa: BLE001 - never let the signal fail the job
        log.warning("job %s: completion signal not published (%s)", job_id,
                    type(exc).__name__)


def _notify(notifier: Notifier, job_id: str, status: str | None) -> None:
    if status is None:
        return
    try:
        notifier(job_id, status)
    except Exception as exc:  # noqa: BLE001 - the job has ended whatever the notifier does
        log.warning("job %s: notifier failed (%s)", job_id, type(exc).__name__)


# --- helpers ---------------------------------------------------------------------------


def with_db_retry(fn: Callable[[], T], *, tries: int = 4, first_delay: float = 0.5) -> T:
    """``fn()``, tried again with backoff while the database is unavailable (a restart, a
    failover, SQLite busy); the last error propagates to the caller's own retry."""
    for i in range(tries):
        try:
            return fn()
        except DB_UNAVAILABLE:
            if i == tries - 1:
                raise
            time.sleep(first_delay * 2 ** i)
    raise AssertionError("unreachable")


def scores_of(body: dict[str, Any]) -> dict[str, int] | None:
    """``score_info`` of a response body, the only part of a result stored in clear;
    ``double_side`` scores are prefixed with the side (``front_blur_score``)."""
    result = body.get("result")
    if not isinstance(result, dict):
        return None
    scores: dict[str, int] = {}
    parts: list[tuple[str, Any]] = [("", result.get("score_info"))]
    parts += [(f"{side}_", (result.get(side) or {}).get("score_info"))
              for side in ("front", "back") if isinstance(result.get(side), dict)]
    for prefix, info in parts:
        if isinstance(info, dict):
            for key, value in info.items():
                name = f"{prefix}{key}"
                if type(value) is int and _SCORE_KEY.fullmatch(name):
                    scores[name] = value
    return scores or None


def _pending_webhook(session: Session, job: Job, *, unattempted_only: bool) -> str | None:
    """The event id of a webhook that still has to go out for this ended job."""
    if (not job.callback_url or job.status not in _FINISHED
            or job.webhook_state != WebhookState.PENDING.value):
        return None
    event_id = event_id_for(job.id, f"job.{job.status}")
    if unattempted_only and session.scalar(
        select(func.count()).select_from(WebhookDelivery)
        .where(WebhookDelivery.event_id == event_id)
    ):
        return None  # a delivery chain exists already; it retries on its own
    return event_id


def _log_unexpected(job_id: str, exc: BaseException) -> None:
    # The traceback's frames (files, lines, code) but not the exception's message, which
    # may quote an input (a URL, recognised text).
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("job %s: unexpected %s\n%s", job_id, type(exc).__name__, frames)


def _recognize(image: bytes, options: RecognitionOptions) -> dict[str, Any]:
    # Imported here: the engine pulls in OpenCV and the OCR models, which the API process
    # (importing this module for embedded mode) should not pay for until a job runs.
    from worker.recognition.engine import recognize

    return recognize(image, options)


# --- one job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Start:
    started: bool
    status: str | None
    options: dict[str, Any] | None = None
    webhook_event_id: str | None = None
    # The input, read in the same transaction: the image bytes or the URL to download.
    source: bytes | str | None = None
    input_error: ServiceError | None = None
    # Whether the job has a webhook (a job's callback URL never changes).
    has_callback: bool = False
    # Whether its photo was stashed in Redis (deleted there once the job has ended).
    stashed: bool = False


def _started(session: Session, job: Any) -> _Start:
    """``job``: the row ``jobs.begin_job`` answered."""
    started = partial(_Start, True, job.status, job.options,
                      has_callback=job.callback_url is not None,
                      stashed=job.input_store == STORE_REDIS)
    try:
        return started(source=_load_input(session, job))
    except ServiceError as exc:  # the input is gone: the job fails with that code
        return started(input_error=exc)


def _load_input(session: Session, job: Any) -> bytes | str:
    if job.input_store == STORE_REDIS:
        data_enc = worker_stash().get(job.id)
        if data_enc is not None:
            return crypto.decrypt(data_enc)
        # Not in Redis: a copy kept in the database after the call timed out, or gone.
    return jobs.load_input(session, job.id)


def _begin(job_id: str, actor: str, restart: bool) -> _Start:
    """queued → running, or restart a job whose previous run died; one transaction."""
    # Relaxed commit: lost in a database crash, the job is simply queued (or running)
    # again. Autocommit: on PostgreSQL the transition and its audit event are one
    # statement (idcard.jobs), and reading the input after it needs no transaction.
    with session_scope(relaxed=True, autocommit=True) as session:
        started = jobs.begin_job(session, job_id, actor)
        if started is not None:
            return _started(session, started)
        job = session.get(Job, job_id, options=jobs.LIGHT, populate_existing=True)
        if job is None:
            return _Start(False, None)
        if job.status == JobStatus.RUNNING.value and (restart or _stale(job)):
            if job.attempts >= MAX_JOB_ATTEMPTS:
                jobs.fail_job(session, job_id, ErrorCode.RECOGNITION_FAILED, GENERIC_FAILURE,
                              actor)
                log.error("job %s: failed after %d attempts that never ended", job_id,
                          job.attempts)
                job = session.get(Job, job_id, options=jobs.LIGHT, populate_existing=True)
                assert job is not None
                return _Start(False, job.status,
                              webhook_event_id=_pending_webhook(session, job,
                                                                unattempted_only=True))
            started = jobs.begin_job(session, job_id, actor, retry=True)
            if started is not None:
                return _started(session, started)
        # Cancelled, finished, or running on a live worker: nothing to do. A finished job
        # whose webhook was never sent (its worker died right after finishing) still
        # gets it.
        return _Start(False, job.status,
                      webhook_event_id=_pending_webhook(session, job, unattempted_only=True))


def _stale(job: Job) -> bool:
    # Running for longer than the deadline: its worker is gone (the reconciler's rule).
    deadline = timedelta(seconds=get_settings().job_deadline_seconds)
    return job.started_at is not None and job.started_at < utcnow() - deadline


def _process(job_id: str, source: bytes | str, options: RecognitionOptions) -> dict[str, Any]:
    """The response body: download a URL input, then recognise."""
    image = source if isinstance(source, bytes) else fetch_url(source)
    del source  # the URL, as early as possible
    return _recognize(image, options)


def run_job(
    job_id: str,
    actor: str | None = None,
    *,
    notifier: Notifier | None = None,
    restart: bool = False,
) -> JobRun:
    """Run job ``job_id`` to its end; idempotent and safe to call again for the same job.

    A cancelled or finished job is left alone; a job running elsewhere too, unless
    ``restart`` (this is a redelivery of a message whose worker died) or it has been
    running past IDCARD_JOB_DEADLINE_SECONDS. Errors end the job as 'failed':
    ``ServiceError`` with its code (URL problems are IDC.0201/IDC.0202), anything else as
    AIS.0105. Database outages are not failures of the job: ``DB_UNAVAILABLE`` errors
    propagate so that the caller retries later (the job then stays 'running' and is
    restarted by the retry, which must pass ``restart=True``).

    ``notifier`` (default ``notify_done``, Redis pub/sub) is told the final status.
    """
    actor = actor or worker_actor()
    notifier = notifier or notify_done
    t0 = time.monotonic()
    begin = with_db_retry(lambda: _begin(job_id, actor, restart))
    if not begin.started:
        if begin.status is None:
            log.warning("job %s: not found, message dropped", job_id)
        else:
            log.info("job %s: nothing to do (%s)", job_id, begin.status)
            if begin.status in _FINISHED or begin.status == JobStatus.CANCELLED.value:
                _notify(notifier, job_id, begin.status)  # a late waiter may still listen
        return JobRun(job_id, begin.status, begin.webhook_event_id)

    body: dict[str, Any] | None = None
    error: ServiceError | None = None
    try:
        if begin.input_error is not None:
            raise begin.input_error
        assert begin.source is not None
        options = RecognitionOptions.from_dict(begin.options or {})
        body = _process(job_id, begin.source, options)
    except ServiceError as exc:
        error = exc
    except DB_UNAVAILABLE:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure ends the job, not the worker
        _log_unexpected(job_id, exc)
        error = ServiceError(ErrorCode.RECOGNITION_FAILED, GENERIC_FAILURE)
    work_ms = int((time.monotonic() - t0) * 1000)

    def finish() -> tuple[str | None, str | None, bool]:
        # A caller of the synchronous route waits for a job whose photo is stashed: its
        # audited read of the result is the durable commit (idcard.db.new_session).
        # Autocommit: the ending is one statement on PostgreSQL (idcard.jobs).
        with session_scope(relaxed=begin.stashed, autocommit=True) as session:
            if body is not None:
                done = jobs.succeed_job(session, job_id, body, scores_of(body), actor)
                status = JobStatus.SUCCEEDED.value
            else:
                assert error is not None
                done = jobs.fail_job(session, job_id, error.code, error.message, actor)
                status = JobStatus.FAILED.value
            if done:
                # This run ended it: its webhook (if any) is due, no need to read it back.
                return status, (event_id_for(job_id, f"job.{status}")
                                if begin.has_callback else None), True
            job = session.get(Job, job_id, options=jobs.LIGHT, populate_existing=True)
            if job is None:
                return None, None, done
            event_id = _pending_webhook(session, job, unattempted_only=False) if done else None
            return job.status, event_id, done

    status, event_id, done = with_db_retry(finish)
    _notify(notifier, job_id, status)  # first: a caller of the sync route is waiting
    if begin.stashed:
        worker_stash().discard(job_id)
    if done:
        log.info("job %s: %s%s in %d ms", job_id, status,
                 f" ({error.code.value})" if error is not None else "", work_ms)
    else:
        # Someone else ended it first (a duplicate run): theirs is the outcome.
        log.info("job %s: already %s, this run's outcome dropped", job_id, status)
    return JobRun(job_id, status, event_id, ran=done)


# --- lost jobs -------------------------------------------------------------------------


def _last_enqueued(session: Session, job_ids: list[str]) -> dict[str, datetime]:
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobEvent.job_id, func.max(JobEvent.at))
        .where(JobEvent.job_id.in_(job_ids), JobEvent.event == EventType.ENQUEUED.value)
        .group_by(JobEvent.job_id)
    ).all()
    return {job_id: at for job_id, at in rows}  # max() keeps the column's UTC type


@dataclass
class ReconcileReport:
    requeued: int = 0  # recognition messages sent again
    failed: int = 0  # jobs failed after MAX_JOB_ATTEMPTS starts
    webhooks: int = 0  # webhook deliveries sent again
    skipped: int = 0  # stuck-looking jobs whose message is still in the broker


def reconcile(
    enqueue_job: Callable[[str, str], None],
    enqueue_webhook: Callable[[str, str], None] | None = None,
    *,
    in_broker: Collection[str] | None = None,
    skip_queues: Collection[str] = (),
    actor: str = "system:reconciler",
    deadline: float | None = None,
    now: datetime | None = None,
    limit: int = 500,
) -> ReconcileReport:
    """Re-enqueue work the broker lost; the database is the source of truth.

    - A job queued, or running, for longer than ``deadline`` (IDCARD_JOB_DEADLINE_SECONDS)
      whose id is not in ``in_broker`` and that was not (re-)enqueued within the deadline
      is sent again: ``enqueue_job(job_id, queue)``, audited as 'enqueued' with reason
      'stuck'. The worker restarts a running one (the previous run's worker is gone); a
      job started MAX_JOB_ATTEMPTS times already is failed with AIS.0105 instead.
    - An ended job whose webhook is pending but overdue by the deadline gets
      ``enqueue_webhook(job_id, event_id)``.

    ``in_broker``: ids of jobs that have a message waiting or in flight (None: unknown, so
    only the once-per-deadline rule prevents duplicates). ``skip_queues``: leave the queued
    jobs of these queues alone this round (too long to tell lost from waiting).
    Duplicate messages are harmless (every transition is conditional) but wasteful.
    """
    settings = get_settings()
    now = now or utcnow()
    deadline = settings.job_deadline_seconds if deadline is None else deadline
    cutoff = now - timedelta(seconds=deadline)
    present = set(in_broker or ())
    report = ReconcileReport()
    to_send: list[tuple[str, str, str]] = []  # (job_id, queue, status)
    webhooks: list[tuple[str, str]] = []

    with session_scope() as session:
        # Jobs whose message is still in the broker are skipped below: look past them,
        # or a backlog older than a lost job would hide it until the backlog drains.
        stuck = jobs.stuck_jobs(session, now, deadline, limit=limit + len(present))
        last = _last_enqueued(session, [j.id for j in stuck])
        for job in stuck:
            queue = jobs.queue_for(job.priority)
            if job.id in present or (job.status == JobStatus.QUEUED.value
                                     and queue in skip_queues):
                report.skipped += 1
                continue
            if last.get(job.id) is not None and last[job.id] > cutoff:
                continue  # re-enqueued recently: give that message its chance
            if job.status == JobStatus.RUNNING.value and job.attempts >= MAX_JOB_ATTEMPTS:
                if jobs.fail_job(session, job.id, ErrorCode.RECOGNITION_FAILED,
                                 GENERIC_FAILURE, actor):
                    report.failed += 1
                    log.error("job %s: failed after %d attempts that never ended", job.id,
                              job.attempts)
                continue
            to_send.append((job.id, queue, job.status))

        if enqueue_webhook is not None:
            webhooks = _overdue_webhooks(session, now, cutoff, present, limit)

    sent: list[tuple[str, str, str]] = []
    for job_id, queue, status in to_send:
        try:
            enqueue_job(job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("job %s: re-enqueue failed (%s)", job_id, type(exc).__name__)
            continue
        sent.append((job_id, queue, status))
        log.warning("job %s: re-enqueued on %s (stuck %s)", job_id, queue, status)
    if sent:
        def record() -> None:
            with session_scope() as session:
                for job_id, queue, status in sent:
                    project_id = session.scalar(select(Job.project_id).where(Job.id == job_id))
                    if project_id is not None:
                        record_event(session, job_id, project_id, EventType.ENQUEUED, actor,
                                     queue=queue, reason="stuck", status=status)
        with_db_retry(record)
    report.requeued = len(sent)

    for job_id, event_id in webhooks:
        try:
            enqueue_webhook(job_id, event_id)  # type: ignore[misc]
            report.webhooks += 1
            log.warning("job %s: webhook delivery re-enqueued", job_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("job %s: webhook re-enqueue failed (%s)", job_id, type(exc).__name__)
    return report


def _overdue_webhooks(session: Session, now: datetime, cutoff: datetime,
                      present: set[str], limit: int) -> list[tuple[str, str]]:
    # Bounded by created_at so that the (status, created_at) index serves the scan.
    candidates = session.scalars(
        select(Job).options(*jobs.LIGHT).where(
            Job.status.in_(_FINISHED),
            Job.created_at > now - WEBHOOK_SWEEP_WINDOW,
            Job.webhook_state == WebhookState.PENDING.value,
            Job.finished_at < cutoff,
        ).order_by(Job.created_at).limit(limit)
    ).all()
    out = []
    for job in candidates:
        if job.id in present:
            continue
        event_id = event_id_for(job.id, f"job.{job.status}")
        due = session.scalar(
            select(func.max(WebhookDelivery.next_attempt_at))
            .where(WebhookDelivery.event_id == event_id)
        )
        if due is None or due < cutoff:
            out.append((job.id, event_id))
    return out
