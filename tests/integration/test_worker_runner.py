"""The job runner, webhook delivery and the reconciler in process, on SQLite (the embedded
mode) and PostgreSQL, with a stand-in for the recognition engine so that each test takes
milliseconds. ``test_worker.py`` runs the same code in real Celery workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from idcard import jobs
from idcard.db import session_scope
from idcard.errors import ErrorCode, ServiceError
from idcard.models import EventType, Job, JobEvent, JobInput, utcnow
from idcard.options import RecognitionOptions
from idcard.projects import create_project
from idcard.settings import Settings
from idcard.webhooks import SIGNATURE_HEADER, deliveries, event_id_for, record_attempt, verify
from worker import delivery, jobrunner
from worker.delivery import deliver, deliver_until_done
from worker.jobrunner import MAX_JOB_ATTEMPTS, reconcile, run_job, scores_of

from .conftest import use_settings
from .worker_support import LocalServer, local_server, send

API = "api:test"
WORKER = "worker:test"
NAME, NUMBER = "郑秋菊", "11010519491231002X"
BODY = {"result": {"name": NAME, "number": NUMBER, "score_info": {"blur_score": 12}}}
IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg"


@pytest.fixture
def env(clean_db: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return use_settings(monkeypatch, url_allow_hosts="127.0.0.1",
                        webhook_backoff_base_seconds="0.05", webhook_max_attempts="3",
                        webhook_timeout_seconds="1", job_deadline_seconds="60")


@pytest.fixture
def project(env: Settings) -> dict[str, str]:
    with session_scope() as s:
        return create_project(s, "bank")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Replace recognition: answers BODY and records the images it was given."""
    seen: list[bytes] = []

    def fake(image: bytes, options: RecognitionOptions) -> dict[str, Any]:
        seen.append(image)
        return BODY

    monkeypatch.setattr(jobrunner, "_recognize", fake)
    return seen


@pytest.fixture
def notes() -> Iterator[list[tuple[str, str]]]:
    yield []


def _notifier(notes: list[tuple[str, str]]) -> Callable[[str, str], None]:
    return lambda job_id, status: notes.append((job_id, status))


def _job(project: dict[str, str], *, created_ago: timedelta | None = None,
         **kwargs: Any) -> str:
    kwargs.setdefault("image", None if "url" in kwargs else IMAGE)
    with session_scope() as s:
        job, _ = jobs.create_job(s, project["project_id"], RecognitionOptions(), actor=API,
                                 now=utcnow() - created_ago if created_ago else None,
                                 **kwargs)
    return job.id


def _get(job_id: str) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def _events(job_id: str) -> list[JobEvent]:
    with session_scope() as s:
        return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                              .order_by(JobEvent.id)))


def _names(job_id: str) -> list[str]:
    return [e.event for e in _events(job_id)]


# --- run_job ----------------------------------------------------------------------------


def test_job_runs_to_success(project, engine, notes) -> None:
    job_id = _job(project, callback_url="https://hooks.example.com/ocr")
    run = run_job(job_id, WORKER, notifier=_notifier(notes))
    assert (run.status, run.ran) == ("succeeded", True)
    assert run.webhook_event_id == event_id_for(job_id, "job.succeeded")
    assert engine == [IMAGE] and notes == [(job_id, "succeeded")]
    job = _get(job_id)
    assert (job.attempts, job.scores, job.webhook_state) == (1, {"blur_score": 12}, "pending")
    with session_scope() as s:
        assert s.get(JobInput, job_id) is None
        assert jobs.read_result(s, project["project_id"], job_id, API) == BODY
    assert _names(job_id)[:5] == ["created", "started", "succeeded", "input_deleted",
                                  "result_read"]


def test_running_again_is_a_no_op(project, engine, notes) -> None:
    job_id = _job(project, callback_url="https://hooks.example.com/ocr")
    run_job(job_id, WORKER, notifier=_notifier(notes))
    again = run_job(job_id, WORKER, notifier=_notifier(notes), restart=True)
    assert (again.status, again.ran) == ("succeeded", False)
    # Its webhook was never tried (a worker that died right after finishing): hand it back.
    assert again.webhook_event_id == event_id_for(job_id, "job.succeeded")
    with session_scope() as s:
        record_attempt(s, job_id, again.webhook_event_id, 1, status_code=500, error=None,
                       actor=WORKER)
    assert run_job(job_id, WORKER, notifier=_notifier(notes)).webhook_event_id is None
    assert len(engine) == 1 and _names(job_id).count("succeeded") == 1
    assert notes == [(job_id, "succeeded")] * 3


def test_missing_job_is_dropped(env, engine, notes) -> None:
    run = run_job("0" * 32, WORKER, notifier=_notifier(notes))
    assert (run.status, run.ran, engine, notes) == (None, False, [], [])


def test_cancelled_job_is_not_run(project, engine, notes) -> None:
    job_id = _job(project)
    with session_scope() as s:
        jobs.cancel_job(s, project["project_id"], job_id, API)
    run = run_job(job_id, WORKER, notifier=_notifier(notes))
    assert (run.status, run.ran, engine) == ("cancelled", False, [])
    assert notes == [(job_id, "cancelled")]
    assert "started" not in _names(job_id)


def test_running_job_is_left_alone_unless_its_worker_died(project, engine, notes) -> None:
    job_id = _job(project)
    with session_scope() as s:
        assert jobs.start_job(s, job_id, "worker:other")
    # A duplicate message while another worker runs the job: nothing to do.
    run = run_job(job_id, WORKER, notifier=_notifier(notes))
    assert (run.status, run.ran, engine) == ("running", False, [])
    # A redelivery (its worker died): run again, as attempt 2.
    run = run_job(job_id, WORKER, notifier=_notifier(notes), restart=True)
    assert (run.status, run.ran) == ("succeeded", True)
    assert _get(job_id).attempts == 2
    retried = [e for e in _events(job_id) if e.event == "retried"]
    assert len(retried) == 1 and retried[0].detail["attempts"] == 2


def test_job_running_past_the_deadline_is_restarted(project, engine, notes) -> None:
    job_id = _job(project, created_ago=timedelta(minutes=5))
    with session_scope() as s:
        jobs.start_job(s, job_id, "worker:dead", now=utcnow() - timedelta(minutes=2))
    run = run_job(job_id, WORKER, notifier=_notifier(notes))  # deadline: 60 s
    assert (run.status, run.ran, _get(job_id).attempts) == ("succeeded", True, 2)


def test_job_that_keeps_killing_workers_is_failed(project, engine, notes) -> None:
    job_id = _job(project)
    with session_scope() as s:
        jobs.start_job(s, job_id, "worker:a")
        for _ in range(MAX_JOB_ATTEMPTS - 1):
            jobs.start_job(s, job_id, "worker:a", retry=True)
    run = run_job(job_id, WORKER, notifier=_notifier(notes), restart=True)
    job = _get(job_id)
    assert (run.status, job.error_code, job.attempts, engine) == (
        "failed", "AIS.0105", MAX_JOB_ATTEMPTS, [])


def test_service_error_fails_the_job_with_its_code(project, notes, monkeypatch) -> None:
    def refuse(image: bytes, options: RecognitionOptions) -> dict:
        raise ServiceError(ErrorCode.NO_CARD, "no ID card found in the image")

    monkeypatch.setattr(jobrunner, "_recognize", refuse)
    job_id = _job(project, callback_url="https://hooks.example.com/ocr")
    run = run_job(job_id, WORKER, notifier=_notifier(notes))
    job = _get(job_id)
    assert (run.status, job.error_code, job.error_msg) == (
        "failed", "AIS.0104", "no ID card found in the image")
    assert run.webhook_event_id == event_id_for(job_id, "job.failed")
    assert _names(job_id)[-2:] == ["failed", "input_deleted"]


def test_a_job_whose_input_is_gone_fails_with_idc_0404(project, notes) -> None:
    job_id = _job(project)
    with session_scope() as s:
        s.delete(s.get(JobInput, job_id))
    run = run_job(job_id, WORKER, notifier=_notifier(notes))
    job = _get(job_id)
    assert (run.status, job.error_code, job.attempts) == ("failed", "IDC.0404", 1)


def test_unexpected_error_is_ais_0105_and_logged_without_personal_data(
    project, notes, monkeypatch, caplog,
) -> None:
    def crash(image: bytes, options: RecognitionOptions) -> dict:
        raise RuntimeError(f"cannot parse {NAME} {NUMBER}")

    monkeypatch.setattr(jobrunner, "_recognize", crash)
    caplog.set_level(logging.DEBUG)
    job_id = _job(project)
    assert run_job(job_id, WORKER, notifier=_notifier(notes)).status == "failed"
    job = _get(job_id)
    assert (job.error_code, job.error_msg) == ("AIS.0105", jobrunner.GENERIC_FAILURE)
    assert "RuntimeError" in caplog.text and job_id in caplog.text
    assert NAME not in caplog.text and NUMBER not in caplog.text


def test_url_job_is_fetched_and_neither_url_nor_result_is_logged(
    project, engine, notes, caplog,
) -> None:
    caplog.set_level(logging.DEBUG)
    with local_server() as server:
        server.routes[f"/kyc/{NUMBER}.jpg"] = lambda h: send(h, 200, IMAGE)
        job_id = _job(project, url=server.url(f"/kyc/{NUMBER}.jpg"))
        run = run_job(job_id, WORKER, notifier=_notifier(notes))
    assert run.status == "succeeded" and engine == [IMAGE]
    assert _get(job_id).url_enc is None
    assert job_id in caplog.text
    assert NUMBER not in caplog.text and NAME not in caplog.text and "/kyc/" not in caplog.text


def test_url_refused_fails_the_job(project, engine, notes) -> None:
    job_id = _job(project, url="http://localhost:9/card.jpg")
    run_job(job_id, WORKER, notifier=_notifier(notes))
    assert (_get(job_id).error_code, engine) == ("IDC.0202", [])


def test_database_outage_while_finishing(project, engine, notes, monkeypatch) -> None:
    monkeypatch.setattr(jobrunner.time, "sleep", lambda s: None)
    real = jobs.succeed_job
    failures = {"left": 2}

    def flaky(*args: Any, **kwargs: Any) -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "succeed_job", flaky)
    # A blip: retried in process, recognition not repeated.
    job_id = _job(project)
    assert run_job(job_id, WORKER, notifier=_notifier(notes)).status == "succeeded"
    assert len(engine) == 1

    # An outage: the error reaches the caller (Celery retries), the job stays running,
    # and the retry (restart=True) runs it again.
    failures["left"] = 100
    job_id = _job(project)
    with pytest.raises(OperationalError):
        run_job(job_id, WORKER, notifier=_notifier(notes))
    assert _get(job_id).status == "running"
    failures["left"] = 0
    run = run_job(job_id, WORKER, notifier=_notifier(notes), restart=True)
    assert (run.status, _get(job_id).attempts) == ("succeeded", 2)


def test_scores_of() -> None:
    assert scores_of(BODY) == {"blur_score": 12}
    assert scores_of({"result": {"front": {"score_info": {"glare_score": 3}},
                                 "back": {"score_info": {"blur_score": 90, "x": "no"}}}}
                     ) == {"front_glare_score": 3, "back_blur_score": 90}
    assert scores_of({"result": {"name": NAME}}) is None
    assert scores_of({"result": {"score_info": {"blur_score": True}}}) is None


# --- webhook delivery -------------------------------------------------------------------


def _ended_job(project: dict[str, str], callback_url: str, engine: list[bytes]) -> tuple[str,
                                                                                       str]:
    job_id = _job(project, callback_url=callback_url)
    run = run_job(job_id, WORKER, notifier=lambda *_: None)
    assert run.webhook_event_id is not None
    return job_id, run.webhook_event_id


@pytest.fixture
def receiver() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def test_delivery_posts_a_signed_body(project, engine, receiver) -> None:
    receiver.routes["/hook"] = lambda h: send(h, 200)
    job_id, event_id = _ended_job(project, receiver.url("/hook"), engine)
    outcome = deliver(job_id, event_id, actor=WORKER)
    assert (outcome.state, outcome.attempt, outcome.status_code, outcome.retry_in) == (
        "delivered", 1, 200, None)
    (hit,) = receiver.received
    assert verify(project["webhook_secret"], hit.body, hit.headers[SIGNATURE_HEADER])
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers[delivery.EVENT_ID_HEADER] == event_id
    # Delivered: nothing more to send.
    assert deliver(job_id, event_id, actor=WORKER) == delivery.SKIPPED
    assert len(receiver.received) == 1


def test_delivery_backs_off_then_gives_up(project, engine, receiver) -> None:
    receiver.routes["/hook"] = lambda h: send(h, 503)
    job_id, event_id = _ended_job(project, receiver.url("/hook"), engine)
    outcomes = [deliver(job_id, event_id, actor=WORKER) for _ in range(4)]
    assert [(o.state, o.attempt, o.retry_in) for o in outcomes] == [
        ("pending", 1, 0.05), ("pending", 2, 0.1), ("failed", 3, None), ("skipped", None, None)]
    assert _get(job_id).webhook_state == "failed"
    assert len(receiver.received) == 3
    assert "webhook_failed" in _names(job_id)


def test_delivery_to_a_refused_address_is_a_failed_attempt(project, engine, receiver) -> None:
    job_id, event_id = _ended_job(project, f"http://localhost:{receiver.port}/hook", engine)
    outcome = deliver(job_id, event_id, actor=WORKER)
    assert (outcome.state, outcome.status_code) == ("pending", None)
    with session_scope() as s:
        (row,) = deliveries(s, job_id)
    assert row.error == "refused" and receiver.received == []


def test_slow_receiver_times_out(project, engine, receiver) -> None:
    release = threading.Event()
    receiver.routes["/hook"] = lambda h: (release.wait(5), send(h, 200))
    job_id, event_id = _ended_job(project, receiver.url("/hook"), engine)
    outcome = deliver(job_id, event_id, actor=WORKER)  # timeout: 1 s
    release.set()
    with session_scope() as s:
        (row,) = deliveries(s, job_id)
    assert (outcome.state, row.error) == ("pending", "timeout")


def test_duplicate_chain_stops(project, engine, receiver, monkeypatch) -> None:
    receiver.routes["/hook"] = lambda h: send(h, 500)
    job_id, event_id = _ended_job(project, receiver.url("/hook"), engine)
    real_post = delivery._post

    def post_while_another_chain_records(*args: Any) -> Any:
        with session_scope() as s:  # the other chain gets attempt 1 in first
            record_attempt(s, job_id, event_id, 1, status_code=500, error=None, actor=WORKER)
        return real_post(*args)

    monkeypatch.setattr(delivery, "_post", post_while_another_chain_records)
    assert deliver(job_id, event_id, actor=WORKER) == delivery.SKIPPED


def test_deliver_until_done(project, engine, receiver) -> None:
    answers = iter([500, 502])
    receiver.routes["/hook"] = lambda h: send(h, next(answers, 200))
    job_id, event_id = _ended_job(project, receiver.url("/hook"), engine)
    outcome = deliver_until_done(job_id, event_id, actor=WORKER)
    assert (outcome.state, outcome.attempt) == ("delivered", 3)


# --- reconciler -------------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, str]] = []
        self.webhooks: list[tuple[str, str]] = []

    def job(self, job_id: str, queue: str) -> None:
        self.jobs.append((job_id, queue))

    def webhook(self, job_id: str, event_id: str) -> None:
        self.webhooks.append((job_id, event_id))


HOUR = timedelta(hours=1)


def test_reconciler_requeues_lost_jobs_once(project, engine) -> None:
    lost = _job(project, created_ago=HOUR)
    lost_bulk = _job(project, created_ago=HOUR, priority="bulk")
    waiting = _job(project, created_ago=HOUR)  # its message is still in the broker
    fresh = _job(project)  # not past the deadline
    sent = Sent()
    report = reconcile(sent.job, sent.webhook, in_broker={waiting})
    assert sorted(sent.jobs) == sorted([(lost, "interactive"), (lost_bulk, "bulk")])
    assert (report.requeued, report.skipped) == (2, 1)
    (event,) = [e for e in _events(lost) if e.event == EventType.ENQUEUED.value]
    assert (event.actor, event.detail) == (
        "system:reconciler", {"queue": "interactive", "reason": "stuck", "status": "queued"})
    assert _names(fresh) == ["created"] and _names(waiting) == ["created"]
    # Re-enqueued within the deadline: left to that message.
    again = Sent()
    reconcile(again.job, again.webhook, in_broker={waiting})
    assert again.jobs == []


def test_a_backlog_still_in_the_broker_does_not_hide_a_lost_job(project) -> None:
    # Three older jobs wait in the broker; with limit=2 the lost one is still found.
    waiting = {_job(project, created_ago=2 * HOUR) for _ in range(3)}
    lost = _job(project, created_ago=HOUR)
    sent = Sent()
    report = reconcile(sent.job, in_broker=waiting, limit=2)
    assert sent.jobs == [(lost, "interactive")]
    assert (report.requeued, report.skipped) == (1, 3)


def test_reconciler_can_leave_long_queues_alone(project) -> None:
    _job(project, created_ago=HOUR, priority="bulk")
    sent = Sent()
    report = reconcile(sent.job, in_broker=set(), skip_queues={"bulk"})
    assert (sent.jobs, report.skipped) == ([], 1)


def test_reconciler_restarts_or_fails_jobs_of_dead_workers(project, engine) -> None:
    dead = _job(project, created_ago=HOUR)
    poison = _job(project, created_ago=HOUR)
    with session_scope() as s:
        jobs.start_job(s, dead, "worker:gone", now=utcnow() - HOUR)
        for i in range(MAX_JOB_ATTEMPTS):
            jobs.start_job(s, poison, "worker:gone", retry=i > 0, now=utcnow() - HOUR)
    sent = Sent()
    report = reconcile(sent.job, sent.webhook, in_broker=set())
    assert sent.jobs == [(dead, "interactive")]
    assert report.failed == 1 and _get(poison).error_code == "AIS.0105"
    # The worker that receives it restarts it (running past the deadline).
    assert run_job(dead, WORKER, notifier=lambda *_: None).status == "succeeded"


def test_reconciler_resends_overdue_webhooks(project, engine, receiver) -> None:
    receiver.routes["/hook"] = lambda h: send(h, 500)
    overdue, overdue_event = _ended_job(project, receiver.url("/hook"), engine)
    retrying, retrying_event = _ended_job(project, receiver.url("/hook"), engine)
    deliver(retrying, retrying_event, actor=WORKER)  # next attempt due in 0.05 s
    later = utcnow() + timedelta(minutes=5)
    sent = Sent()
    reconcile(sent.job, sent.webhook, in_broker={retrying}, now=later)
    assert sent.webhooks == [(overdue, overdue_event)]
