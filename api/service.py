"""What the routes ask for, on one caller's project: submit, wait, read, cancel, list.

The job state machine itself is ``idcard.jobs``; this adds the hand-over to the
dispatcher, which must happen after the job is committed (a worker has to find it).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio import CapacityLimiter
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from api.body import parse_json_object
from api.dispatch import Dispatcher
from api.metrics import ApiMetrics
from api.schemas import (
    BatchSubmission,
    JobSubmission,
    RecognitionInput,
    batch_path,
    event_view,
    job_path,
    job_response_body,
    job_view,
    parse_recognition,
    timestamp,
)
from idcard.batches import batch_counts, batch_results, create_batch, get_batch
from idcard.db import new_session, session_scope
from idcard.errors import ErrorCode, ServiceError
from idcard.inputs import GRACE_SECONDS, STORE_REDIS, InputStash
from idcard.jobs import (
    cancel_job,
    create_job,
    fail_job,
    get_job,
    job_events,
    keep_input,
    list_jobs,
    queue_for,
    read_job,
    read_result,
    record_enqueued,
)
from idcard.models import Job, JobStatus, Priority, WebhookDelivery
from idcard.settings import Settings

log = logging.getLogger(__name__)

# Batch results: commit the audit events of what was streamed every this many lines.
_RESULTS_COMMIT_EVERY = 20
# Sync-route bodies decoded at once (each up to 14 MB of JSON and base64, decoded into
# several copies): as many as the thread pool every other request runs on (anyio's
# default, 40), not as many as there may be waiting threads (api.app.SYNC_WAIT_THREADS).
_DECODE_SLOTS = threading.BoundedSemaphore(40)


def _not_ready(message: str) -> ServiceError:
    return ServiceError(ErrorCode.NOT_READY, message)


def _last_deliveries(session: Session, jobs: Sequence[Job]) -> dict[str, WebhookDelivery]:
    """The last recorded webhook attempt of each job that has a callback, in one query."""
    ids = [j.id for j in jobs if j.callback_url]
    if not ids:
        return {}
    last = (select(WebhookDelivery.job_id, func.max(WebhookDelivery.attempt).label("n"))
            .where(WebhookDelivery.job_id.in_(ids)).group_by(WebhookDelivery.job_id)
            .subquery())
    rows = session.scalars(select(WebhookDelivery).join(last, and_(
        WebhookDelivery.job_id == last.c.job_id, WebhookDelivery.attempt == last.c.n)))
    return {row.job_id: row for row in rows}


@dataclass
class JobService:
    session: Session
    dispatcher: Dispatcher
    settings: Settings
    project_id: str
    actor: str
    metrics: ApiMetrics
    wait_limiter: CapacityLimiter

    # --- submitting ---------------------------------------------------------------

    def _require_ready(self) -> None:
        # Refuse before storing anything: a job accepted while the broker is down would
        # only run once the reconciler finds it.
        if not self.dispatcher.ready():
            raise _not_ready("the job queue is unavailable; try again later")

    def _enqueue(self, jobs: Sequence[Job], session: Session | None = None) -> bool:
        """Hand committed jobs over and audit it in ``session`` (default: the request's).
        On a broker failure the rest stay 'queued' in the database, where the reconciler
        re-enqueues them; False then."""
        session = session or self.session
        ok = True
        for index, job in enumerate(jobs):
            queue = queue_for(job.priority)
            try:
                self.dispatcher.enqueue(job.id, queue)
            except Exception as exc:  # noqa: BLE001 - any broker failure
                log.warning("enqueue failed (%s); %d job(s) left for the reconciler",
                            type(exc).__name__, len(jobs) - index)
                ok = False
                break
            record_enqueued(session, job.id, self.actor, queue)
        session.commit()
        return ok

    def submit(self, sub: JobSubmission, idempotency_key: str | None) -> tuple[Job, bool]:
        """``(job, created)``; an idempotent replay answers the first job."""
        self._require_ready()
        job, created = create_job(
            self.session, self.project_id, sub.input.options, image=sub.input.image,
            url=sub.input.url, priority=sub.priority, callback_url=sub.callback_url,
            client_reference=sub.client_reference, idempotency_key=idempotency_key,
            actor=self.actor,
        )
        self.session.commit()
        if created:
            self._enqueue([job])
        return job, created

    def submit_batch(self, sub: BatchSubmission) -> dict[str, Any]:
        self._require_ready()
        batch, jobs = create_batch(
            self.session, self.project_id, sub.items, sub.options, priority=sub.priority,
            callback_url=sub.callback_url, client_reference=sub.client_reference,
            actor=self.actor,
        )
        self.session.commit()
        self._enqueue(jobs)
        path = batch_path(self.project_id, batch.id)
        return {"batch_id": batch.id, "job_ids": [j.id for j in jobs], "status_url": path,
                "results_url": f"{path}/results"}

    # --- the synchronous route ----------------------------------------------------

    @property
    def _stash(self) -> InputStash | None:
        return getattr(self.dispatcher, "input_stash", None)

    def _stash_put(self, job_id: str, data_enc: bytes) -> None:
        assert self._stash is not None
        try:
            self._stash.put(job_id, data_enc,
                            self.settings.sync_timeout_seconds + GRACE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - Redis down: so is the broker
            log.warning("input stash unavailable (%s)", type(exc).__name__)
            raise _not_ready("the job queue is unavailable; try again later") from None

    def _start_sync_job(self, rec: RecognitionInput) -> str:
        if self._stash is None or rec.image is None:
            # With a stash, its write is the check: Redis down refuses the call before
            # anything is stored, and costs no separate round trip.
            self._require_ready()
        # The photo goes through Redis when there is one (idcard.inputs): the caller is
        # waiting, and the database write of 200 KB was the route's largest overhead.
        # Nothing is promised before the answer, whose audited read commits normally
        # (in the request's session): these commits do not wait for the disk.
        with new_session(self.settings.database_url, relaxed=True) as session:
            job, _ = create_job(session, self.project_id, rec.options, image=rec.image,
                                url=rec.url, priority=Priority.INTERACTIVE, actor=self.actor,
                                stash=self._stash_put if self._stash is not None else None)
            session.commit()
            listen = getattr(self.dispatcher, "listen_for", None)  # optional (Celery)
            if listen is not None:
                listen(job.id)  # before the hand-over: its completion cannot be missed
            if not self._enqueue([job], session):
                self._stop_listening(job.id)
                # The caller is waiting and will retry: this job must never run later.
                fail_job(session, job.id, ErrorCode.NOT_READY, "job queue unavailable",
                         self.actor)
                session.commit()
                raise _not_ready("the job queue is unavailable; try again later")
            return job.id

    def _sync_answer(self, job_id: str, timeout: float) -> tuple[int, dict[str, Any]]:
        # The audited read is this call's one commit that waits for the disk (it makes
        # the relaxed ones before it durable too); on PostgreSQL one statement in
        # autocommit mode (idcard.jobs.read_job).
        with session_scope(self.settings.database_url, autocommit=True) as session:
            job, body = read_job(session, self.project_id, job_id, self.actor,
                                 purpose="sync")
        if job.status == JobStatus.SUCCEEDED.value:
            self.metrics.observe_job(job)
            if body is not None:
                return 200, body
        elif job.status == JobStatus.FAILED.value:
            self.metrics.observe_job(job)
            try:
                code = ErrorCode(job.error_code)
            except ValueError:
                code = ErrorCode.RECOGNITION_FAILED
            return code.http_status, {"error_code": code.value, "error_msg": job.error_msg}
        elif job.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            self._keep_stashed_input(job.id, job.input_store)
            raise ServiceError(
                ErrorCode.SYNC_TIMEOUT,
                f"recognition did not finish within {timeout:g} s; it goes on as job "
                f"{job.id}: poll GET {job_path(self.project_id, job.id)}",
            )
        raise ServiceError(ErrorCode.RECOGNITION_FAILED, f"job {job.id} ended {job.status}")

    def _stop_listening(self, job_id: str) -> None:
        stop = getattr(self.dispatcher, "stop_listening", None)
        if stop is not None:
            stop(job_id)

    def _wait_and_answer(self, job_id: str, timeout: float) -> tuple[int, dict[str, Any]]:
        self.dispatcher.wait(job_id, timeout)
        return self._sync_answer(job_id, timeout)

    def _keep_stashed_input(self, job_id: str, input_store: str | None) -> None:
        """The job goes on after a timeout: its photo moves from Redis to the database,
        as durable as an asynchronous job's (a worker that has started has read it)."""
        if input_store != STORE_REDIS or self._stash is None:
            return
        try:
            data_enc = self._stash.get(job_id)
        except Exception as exc:  # noqa: BLE001 - the worker may still read it there
            log.warning("job %s: stashed input not kept (%s)", job_id, type(exc).__name__)
            return
        if data_enc is not None and keep_input(self.session, job_id, data_enc):
            self.session.commit()
            # No worker reads it from Redis now (one that started has read it already):
            # it need not wait there for its TTL.
            self._stash.discard(job_id)

    def _recognize_blocking(self, raw_body: bytes, timeout: float) -> tuple[int, dict[str, Any]]:
        with _DECODE_SLOTS:
            rec = parse_recognition(parse_json_object(raw_body))
        job_id = self._start_sync_job(rec)
        try:
            return self._wait_and_answer(job_id, timeout)
        finally:
            self._stop_listening(job_id)  # one no wait took (the enqueue failed)

    async def recognize(self, raw_body: bytes) -> tuple[int, dict[str, Any]]:
        """Run one recognition of the vendor's request (``raw_body``, its JSON) as an
        interactive job and wait for it: ``(status, body)`` with the vendor's body, or
        ``IDC.0408`` after IDCARD_SYNC_TIMEOUT_SECONDS.

        One trip to a worker thread, as each trip costs two wake-ups (there and back),
        a fraction of a millisecond each on this machine: it decodes the body (up to
        14 MB of JSON and base64, kept off the event loop), stores the job, enqueues it,
        waits for it and reads its answer. Waiting threads have their own limiter: slow
        recognitions must not starve the thread pool that every other request runs on.
        """
        return await anyio.to_thread.run_sync(
            self._recognize_blocking, raw_body, self.settings.sync_timeout_seconds,
            limiter=self.wait_limiter)

    # --- reading and cancelling ---------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        job = get_job(self.session, self.project_id, job_id)
        result = None
        if job.status == JobStatus.SUCCEEDED.value:
            result = read_result(self.session, self.project_id, job_id, self.actor)
        return job_view(job, result, last_delivery=_last_deliveries(self.session, [job])
                        .get(job.id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = cancel_job(self.session, self.project_id, job_id, self.actor)
        if job.input_store == STORE_REDIS and self._stash is not None:
            self.session.commit()  # cancelled first: no worker starts it without input
            self._stash.discard(job.id)
        return job_view(job)

    def list_page(self, **filters: Any) -> dict[str, Any]:
        jobs, cursor = list_jobs(self.session, self.project_id, **filters)
        last = _last_deliveries(self.session, jobs)
        return {"jobs": [job_view(j, with_result=False, last_delivery=last.get(j.id))
                         for j in jobs], "next_cursor": cursor}

    def events(self, job_id: str) -> dict[str, Any]:
        events = job_events(self.session, self.project_id, job_id)
        return {"job_id": job_id, "events": [event_view(e) for e in events]}

    # --- batches ------------------------------------------------------------------

    def batch(self, batch_id: str) -> dict[str, Any]:
        batch = get_batch(self.session, self.project_id, batch_id)
        counts = batch_counts(self.session, self.project_id, batch_id)
        total = counts.pop("total")
        done = counts[JobStatus.QUEUED.value] + counts[JobStatus.RUNNING.value] == 0
        return {"batch_id": batch.id, "created_at": timestamp(batch.created_at),
                "priority": batch.priority, "client_reference": batch.client_reference,
                "total": total, "counts": counts, "done": done}

    def batch_result_lines(self, batch_id: str) -> Iterator[bytes]:
        """Check the batch now (a 404 must come before the 200), then stream its lines
        from a session of their own: this request's session ends before streaming."""
        get_batch(self.session, self.project_id, batch_id)
        return _result_lines(self.settings.database_url, self.project_id, batch_id,
                             self.actor)


def _result_lines(database_url: str, project_id: str, batch_id: str,
                  actor: str) -> Iterator[bytes]:
    session = new_session(database_url)
    try:
        results = batch_results(session, project_id, batch_id, actor)
        for n, (job, body) in enumerate(results, 1):
            line = {"job_id": job.id, "client_reference": job.client_reference,
                    "status": job.status, "response": job_response_body(job, body)}
            yield json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"
            if n % _RESULTS_COMMIT_EVERY == 0:
                session.commit()  # the reads audited so far; no long write lock on SQLite
        session.commit()
    finally:
        session.close()
