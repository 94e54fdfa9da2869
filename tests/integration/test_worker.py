"""The workers for real: Celery worker subprocesses on Redis, a throwaway PostgreSQL
database, generated card photos, local HTTP servers for image URLs and webhook receivers.

The test process plays the API: it creates jobs with ``idcard.jobs`` and sends the task
by name (``idcard.queues``), as the API does. One worker serves most tests (queues
interactive, webhooks, maintenance, started through ``idcard-ocr worker``); the bulk queue
belongs to the workers of the crash tests.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from idcard.db import session_scope
from idcard.inputs import InputStash, stash_key
from idcard.jobs import (
    cancel_job,
    create_job,
    keep_input,
    queue_for,
    read_result,
    record_enqueued,
)
from idcard.migrate import upgrade
from idcard.models import Job, JobEvent, JobInput, JobStatus, utcnow
from idcard.options import RecognitionOptions
from idcard.projects import create_project
from idcard.queues import (
    QUEUE_MAINTENANCE,
    TASK_RECOGNIZE,
    TASK_RECONCILE,
    done_channel,
)
from idcard.settings import get_settings
from idcard.webhooks import SIGNATURE_HEADER, deliveries, event_id_for, verify

from .conftest import TEST_SECRET_KEY, throwaway_postgres
from .worker_support import (
    LocalServer,
    WorkerProcess,
    celery_worker,
    claimed_redis_db,
    local_server,
    send,
    wait_until,
)

API = "api:test"
TERMINAL = {s.value for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)}
FIELDS = ("name", "sex", "ethnicity", "birth", "address", "number")


@dataclass
class Stack:
    env: dict[str, str]
    redis_url: str
    client: Celery
    project_id: str
    webhook_secret: str
    log_dir: Path
    main: WorkerProcess
    bulk_worker: WorkerProcess  # recognises slowly, to be killed mid-job
    extra: list[WorkerProcess] = field(default_factory=list)

    def submit(self, *, image: bytes | None = None, url: str | None = None,
               priority: str = "interactive", callback_url: str | None = None,
               options: RecognitionOptions | None = None, send_task: bool = True,
               created_ago: timedelta | None = None) -> str:
        """Create a job and enqueue it, as the API does; its id."""
        with session_scope() as s:
            job, _ = create_job(
                s, self.project_id, options or RecognitionOptions(), image=image, url=url,
                priority=priority, callback_url=callback_url, actor=API,
                now=utcnow() - created_ago if created_ago else None,
            )
        if send_task:
            queue = queue_for(priority)
            self.client.send_task(TASK_RECOGNIZE, args=[job.id], queue=queue)
            with session_scope() as s:
                record_enqueued(s, job.id, API, queue)
        return job.id

    def job(self, job_id: str) -> Job:
        with session_scope() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with session_scope() as s:
            return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                  .order_by(JobEvent.id)))

    def event_names(self, job_id: str) -> list[str]:
        return [e.event for e in self.events(job_id)]

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        def ended() -> Job | None:
            job = self.job(job_id)
            return job if job.status in TERMINAL else None

        try:
            return wait_until(ended, timeout, f"job {job_id} to end", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.main.log_text()}") from None

    def result(self, job_id: str) -> dict[str, Any] | None:
        with session_scope() as s:
            return read_result(s, self.project_id, job_id, API)


def _worker_env(db_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCARD_")}
    env.update({
        "IDCARD_DATABASE_URL": db_url,
        "IDCARD_REDIS_URL": redis_url,
        "IDCARD_SECRET_KEY": TEST_SECRET_KEY,
        # The tests' image and webhook servers listen on 127.0.0.1 (nothing else is
        # allowed to be private).
        "IDCARD_URL_ALLOW_HOSTS": "127.0.0.1",
        "IDCARD_URL_READ_TIMEOUT": "2",
        "IDCARD_URL_TOTAL_TIMEOUT": "5",
        "IDCARD_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "IDCARD_WEBHOOK_MAX_ATTEMPTS": "4",
        "IDCARD_WEBHOOK_TIMEOUT_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("worker-logs")
    tag = secrets.token_hex(3)
    with claimed_redis_db() as redis_url, throwaway_postgres(postgres_admin_url) as db_url, \
            pytest.MonkeyPatch.context() as mp:
        upgrade(db_url)
        env = _worker_env(db_url, redis_url)
        for key, value in env.items():
            if key.startswith("IDCARD_"):
                mp.setenv(key, value)
        get_settings.cache_clear()
        with session_scope() as s:
            creds = create_project(s, "bank")
        client = Celery("test-api", broker=redis_url)
        client.conf.update(task_serializer="json", accept_content=["json"],
                           broker_connection_retry_on_startup=True)
        main = celery_worker(f"main-{tag}@localhost", "interactive,webhooks,maintenance", env,
                             log_dir, cli=True)
        bulk = celery_worker(f"doomed-{tag}@localhost", "bulk", env, log_dir,
                             slow_seconds=60)
        st = Stack(env, redis_url, client, creds["project_id"], creds["webhook_secret"],
                   log_dir, main, bulk)
        try:
            main.start()
            bulk.start()
            main.wait_ready(client)
            bulk.wait_ready(client)
            yield st
        finally:
            WorkerProcess.stop_all([main, bulk, *st.extra])
            client.close()
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def card(stack: Stack) -> Any:
    from synthcard import make_photo

    return make_photo(1, "clean", "front")


@pytest.fixture(scope="module")
def image_server() -> Iterator[LocalServer]:
    """Serves the card photo and a few bad answers (routes are added by the tests)."""
    with local_server() as server:
        yield server


def _assert_card(result: dict[str, Any], expected: dict[str, str]) -> None:
    assert {k: result[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}


# --- the happy path ---------------------------------------------------------------------


def test_image_job_succeeds_with_fields_events_and_input_deleted(stack: Stack, card) -> None:
    options = RecognitionOptions(flags=frozenset({"return_verification"}))
    listener = redis.Redis.from_url(stack.redis_url).pubsub()
    job_id = stack.submit(image=card.image_bytes, options=options, send_task=False)
    listener.subscribe(done_channel(job_id))
    stack.client.send_task(TASK_RECOGNIZE, args=[job_id], queue="interactive")

    job = stack.wait(job_id)
    assert (job.status, job.error_code, job.attempts) == ("succeeded", None, 1)
    assert job.started_at and job.finished_at and job.started_at <= job.finished_at
    body = stack.result(job_id)
    assert body is not None
    _assert_card(body["result"], card.expected)
    assert body["result"]["verification_result"]["valid_number"] is True

    with session_scope() as s:
        assert s.get(JobInput, job_id) is None  # the image died with the job
        stored = s.get(Job, job_id)
        assert stored is not None and card.expected["name"].encode() not in stored.result_enc
    events = stack.events(job_id)
    assert [e.event for e in events][:5] == [
        "created", "started", "succeeded", "input_deleted", "result_read"]
    started = events[1]
    assert started.actor.startswith("worker:") and started.detail["attempts"] == 1

    # The completion signal, for the synchronous route: the status only.
    message = wait_until(lambda: listener.get_message(ignore_subscribe_messages=True,
                                                      timeout=0.2), 10, "done signal")
    assert message["data"] == b"succeeded"
    listener.close()


def _stash(stack: Stack) -> InputStash:
    return InputStash(redis.Redis.from_url(stack.redis_url))


def test_a_stashed_photo_is_read_from_redis_and_deleted_there(stack: Stack, card) -> None:
    """The synchronous route's photo: in Redis (encrypted, with a TTL), never in the
    database; gone from Redis once the job has ended."""
    stash = _stash(stack)
    with session_scope() as s:
        job, _ = create_job(s, stack.project_id, RecognitionOptions(),
                            image=card.image_bytes, actor=API,
                            stash=lambda job_id, data: stash.put(job_id, data, 60))
    held = redis.Redis.from_url(stack.redis_url)
    stored = held.get(stash_key(job.id))
    assert stored is not None and card.image_bytes[:64] not in stored
    assert 0 < held.ttl(stash_key(job.id)) <= 60
    stack.client.send_task(TASK_RECOGNIZE, args=[job.id], queue="interactive")

    done = stack.wait(job.id)
    assert done.status == "succeeded" and done.input_store == "redis", done.error_msg
    _assert_card(stack.result(job.id)["result"], card.expected)
    wait_until(lambda: held.get(stash_key(job.id)) is None, 10, "stash deleted")
    assert "input_deleted" in stack.event_names(job.id)
    with session_scope() as s:
        assert s.get(JobInput, job.id) is None
    held.close()


def test_a_kept_photo_is_read_from_the_database(stack: Stack, card) -> None:
    """After a sync call timed out the photo was kept in the database; the Redis copy
    has expired since: the worker falls back to the database."""
    stash = _stash(stack)
    with session_scope() as s:
        job, _ = create_job(s, stack.project_id, RecognitionOptions(),
                            image=card.image_bytes, actor=API,
                            stash=lambda job_id, data: stash.put(job_id, data, 60))
    with session_scope() as s:
        data = stash.get(job.id)
        assert data is not None and keep_input(s, job.id, data)
    stash.discard(job.id)
    stack.client.send_task(TASK_RECOGNIZE, args=[job.id], queue="interactive")
    done = stack.wait(job.id)
    assert done.status == "succeeded", done.error_msg
    with session_scope() as s:
        assert s.get(JobInput, job.id) is None


def test_a_stashed_photo_that_expired_fails_the_job_cleanly(stack: Stack, card) -> None:
    stash = _stash(stack)
    with session_scope() as s:
        job, _ = create_job(s, stack.project_id, RecognitionOptions(),
                            image=card.image_bytes, actor=API,
                            stash=lambda job_id, data: stash.put(job_id, data, 60))
    stash.discard(job.id)  # as if its TTL had run out
    stack.client.send_task(TASK_RECOGNIZE, args=[job.id], queue="interactive")
    done = stack.wait(job.id)
    assert (done.status, done.error_code) == ("failed", "IDC.0404")
    # ...and the worker goes on with the next job.
    assert stack.wait(stack.submit(image=card.image_bytes)).status == "succeeded"


def test_url_job_is_downloaded_through_a_redirect(stack: Stack, card,
                                                  image_server: LocalServer) -> None:
    image_server.routes["/card.jpg"] = lambda h: send(h, 200, card.image_bytes,
                                                      {"Content-Type": "image/jpeg"})
    image_server.routes["/go"] = lambda h: send(h, 302, headers={"Location": "/card.jpg"})
    job_id = stack.submit(url=image_server.url("/go?who=someone"))

    job = stack.wait(job_id)
    assert job.status == "succeeded", (job.error_code, job.error_msg)
    _assert_card(stack.result(job_id)["result"], card.expected)
    assert job.url_enc is None  # the URL may name a person: gone with the job
    assert "input_deleted" in stack.event_names(job_id)
    assert [r.path for r in image_server.received][-2:] == ["/go?who=someone", "/card.jpg"]


# --- refused and failed downloads -------------------------------------------------------


def _huge(h: BaseHTTPRequestHandler, *, declared: bool) -> None:
    size = 10 * 1024 * 1024 + 1
    h.send_response(200)
    if declared:
        h.send_header("Content-Length", str(size))
    else:
        h.send_header("Connection", "close")
        h.close_connection = True
    h.end_headers()
    chunk = b"\0" * 65536
    try:
        for _ in range(size // len(chunk) + 1):
            h.wfile.write(chunk)
    except OSError:
        pass  # the worker hung up once it had enough


@pytest.mark.parametrize("path, code, words", [
    ("localhost:/card.jpg", "IDC.0202", "not a public address"),  # loopback, not allowed
    ("http://169.254.169.254/latest/meta-data/", "IDC.0202", "not a public address"),
    ("http://10.1.2.3/card.jpg", "IDC.0202", "not a public address"),
    ("ftp://127.0.0.1/card.jpg", "IDC.0202", "http and https"),
    ("/to-private", "IDC.0202", "not a public address"),  # a redirect is checked too
    ("/missing", "IDC.0201", "HTTP 404"),
    ("/huge-streamed", "IDC.0201", "larger than 10 MB"),
    ("/huge-declared", "IDC.0201", "larger than 10 MB"),
    ("/loop", "IDC.0201", "too many redirects"),
    ("/slow", "IDC.0201", "timed out"),
])
def test_bad_url_fails_with_its_code(stack: Stack, image_server: LocalServer, path: str,
                                     code: str, words: str) -> None:
    port = image_server.port
    image_server.routes.update({
        "/to-private": lambda h: send(h, 302, headers={
            "Location": f"http://localhost:{port}/card.jpg"}),
        "/huge-streamed": lambda h: _huge(h, declared=False),
        "/huge-declared": lambda h: _huge(h, declared=True),
        "/loop": lambda h: send(h, 302, headers={"Location": "/loop"}),
        "/slow": lambda h: (time.sleep(3), send(h, 200, b"late")),
    })
    if path.startswith("localhost:"):
        url = image_server.url(path.split(":", 1)[1], host="localhost")
    elif path.startswith("/"):
        url = image_server.url(path)
    else:
        url = path
    job = stack.wait(stack.submit(url=url), timeout=30)
    assert (job.status, job.error_code) == ("failed", code)
    assert words in job.error_msg
    assert str(port) not in job.error_msg and "127.0.0.1" not in job.error_msg
    assert job.url_enc is None


def test_non_image_fails_and_the_worker_keeps_working(stack: Stack, card) -> None:
    bad = stack.submit(image=b"this is not an image at all")
    good = stack.submit(image=card.image_bytes)
    job = stack.wait(bad)
    assert (job.status, job.error_code) == ("failed", "AIS.0102")
    assert job.error_msg
    assert stack.wait(good).status == "succeeded"
    assert stack.main.proc.poll() is None


# --- webhooks ---------------------------------------------------------------------------


def test_webhook_is_delivered_signed(stack: Stack, card) -> None:
    with local_server() as receiver:
        receiver.routes["/hook"] = lambda h: send(h, 204)
        job_id = stack.submit(image=card.image_bytes, callback_url=receiver.url("/hook"))
        assert stack.wait(job_id).status == "succeeded"
        wait_until(lambda: stack.job(job_id).webhook_state == "delivered", 20,
                   "webhook delivered")
    (hit,) = [r for r in receiver.received if r.path == "/hook"]
    assert verify(stack.webhook_secret, hit.body, hit.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", hit.body, hit.headers[SIGNATURE_HEADER])
    body = json.loads(hit.body)
    assert body["event"] == "job.succeeded"
    assert body["event_id"] == event_id_for(job_id, "job.succeeded")
    assert (body["job_id"], body["project_id"], body["status"]) == (
        job_id, stack.project_id, "succeeded")
    _assert_card(body["result"]["result"], card.expected)
    with session_scope() as s:
        rows = deliveries(s, job_id)
    assert [(r.attempt, r.status_code, r.state) for r in rows] == [(1, 204, "delivered")]
    names = stack.event_names(job_id)
    assert names.count("webhook_attempt") == 1 and "webhook_delivered" in names


def test_webhook_is_retried_until_the_receiver_answers(stack: Stack) -> None:
    answers = iter([500, 500, 200])
    with local_server() as receiver:
        receiver.routes["/hook"] = lambda h: send(h, next(answers, 200))
        job_id = stack.submit(image=b"not an image", callback_url=receiver.url("/hook"))
        assert stack.wait(job_id).status == "failed"
        wait_until(lambda: stack.job(job_id).webhook_state == "delivered", 20,
                   "webhook delivered")
    hits = [r for r in receiver.received if r.path == "/hook"]
    assert len(hits) == 3
    bodies = [json.loads(h.body) for h in hits]
    assert {b["event_id"] for b in bodies} == {event_id_for(job_id, "job.failed")}
    assert bodies[0]["event"] == "job.failed" and bodies[0]["error_code"] == "AIS.0102"
    assert "result" not in bodies[0]
    assert all(verify(stack.webhook_secret, h.body, h.headers[SIGNATURE_HEADER]) for h in hits)
    with session_scope() as s:
        rows = deliveries(s, job_id)
    assert [(r.attempt, r.status_code, r.state) for r in rows] == [
        (1, 500, "pending"), (2, 500, "pending"), (3, 200, "delivered")]
    # Exponential backoff (base 0.2 s): at least 0.2 s, then 0.4 s, between attempts.
    assert (rows[1].at - rows[0].at).total_seconds() >= 0.2
    assert (rows[2].at - rows[1].at).total_seconds() >= 0.4


# --- cancellation, crashes, lost messages -----------------------------------------------


def test_cancelled_job_is_never_run(stack: Stack, card) -> None:
    listener = redis.Redis.from_url(stack.redis_url).pubsub()
    job_id = stack.submit(image=card.image_bytes, send_task=False)
    with session_scope() as s:
        cancel_job(s, stack.project_id, job_id, API)
    listener.subscribe(done_channel(job_id))
    stack.client.send_task(TASK_RECOGNIZE, args=[job_id], queue="interactive")
    message = wait_until(lambda: listener.get_message(ignore_subscribe_messages=True,
                                                      timeout=0.2), 20, "message handled")
    assert message["data"] == b"cancelled"
    listener.close()
    job = stack.job(job_id)
    assert (job.status, job.attempts, job.started_at) == ("cancelled", 0, None)
    assert "started" not in stack.event_names(job_id)


def test_job_of_a_killed_worker_runs_again_elsewhere_exactly_once(stack: Stack, card) -> None:
    job_id = stack.submit(image=card.image_bytes, priority="bulk")
    # The doomed worker sleeps 60 s inside recognition: kill it once the job started.
    wait_until(lambda: "started" in stack.event_names(job_id), 30, "the job to start")
    stack.bulk_worker.kill()
    assert stack.job(job_id).status == "running"  # as a dead worker leaves it

    # Redis hands the unacknowledged message to another worker after the visibility
    # timeout, which follows IDCARD_JOB_DEADLINE_SECONDS (2 s for this worker).
    time.sleep(2.5)
    rescuer = celery_worker(f"rescuer-{secrets.token_hex(3)}@localhost", "bulk",
                            {**stack.env, "IDCARD_JOB_DEADLINE_SECONDS": "2"}, stack.log_dir)
    stack.extra.append(rescuer)
    rescuer.start()
    try:
        job = wait_until(lambda: (j := stack.job(job_id)).status in TERMINAL and j, 60,
                         "the job to end on the second worker")
    except AssertionError:
        raise AssertionError(rescuer.log_text()) from None
    assert (job.status, job.attempts) == ("succeeded", 2)
    _assert_card(stack.result(job_id)["result"], card.expected)
    events = stack.events(job_id)
    names = [e.event for e in events]
    assert names.count("succeeded") == 1 and names.count("input_deleted") == 1
    assert names.index("started") < names.index("retried") < names.index("succeeded")
    assert events[names.index("retried")].detail["attempts"] == 2
    rescuer.stop()


def test_sigterm_lets_the_running_job_finish(stack: Stack, card) -> None:
    worker = celery_worker(f"graceful-{secrets.token_hex(3)}@localhost", "bulk", stack.env,
                           stack.log_dir, slow_seconds=2)
    stack.extra.append(worker)
    worker.start()
    worker.wait_ready(stack.client)
    job_id = stack.submit(image=card.image_bytes, priority="bulk")
    wait_until(lambda: "started" in stack.event_names(job_id), 30, "the job to start")
    assert worker.terminate(timeout=60) == 0, worker.log_text()
    job = stack.job(job_id)
    assert (job.status, job.attempts) == ("succeeded", 1), worker.log_text()


def test_reconciler_requeues_a_job_whose_message_was_lost(stack: Stack, card) -> None:
    # Queued an hour ago, but Redis lost its message (say, a restart): only SQL knows it.
    job_id = stack.submit(image=card.image_bytes, send_task=False,
                          created_ago=timedelta(hours=1))
    stack.client.send_task(TASK_RECONCILE, queue=QUEUE_MAINTENANCE)
    job = stack.wait(job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    events = stack.events(job_id)
    (enqueued,) = [e for e in events if e.event == "enqueued"]
    assert enqueued.actor == "system:reconciler"
    assert enqueued.detail == {"queue": "interactive", "reason": "stuck", "status": "queued"}

    # Nothing stuck any more: a second round sends nothing.
    stack.client.send_task(TASK_RECONCILE, queue=QUEUE_MAINTENANCE)
    wait_until(lambda: stack.main.log_text().count(f"{TASK_RECONCILE}[") >= 4, 20,
               "the second reconciliation")  # received + succeeded, twice
    assert [e.event for e in stack.events(job_id)].count("enqueued") == 1


def test_broker_scan_sees_waiting_messages(stack: Stack) -> None:
    # What the reconciler relies on to tell a lost message from a waiting one.
    from worker.celery_app import broker_job_ids, make_app

    app = make_app(get_settings())
    job_id = secrets.token_hex(16)
    parking = f"test-parking-{secrets.token_hex(3)}"  # a queue nobody consumes
    stack.client.send_task(TASK_RECOGNIZE, args=[job_id], queue=parking)
    try:
        assert broker_job_ids(app, queues=(parking,)) == ({job_id}, set())
        assert broker_job_ids(app, queues=(parking,), limit=0) == (set(), {parking})
    finally:
        redis.Redis.from_url(stack.redis_url).delete(parking)
        app.close()


def test_a_listened_for_completion_is_never_missed(stack: Stack) -> None:
    """The synchronous route starts listening before it enqueues: a completion published
    at once (faster than any wait could begin) still ends the wait, with no database
    read (which knows no such job here, so only the message can end it)."""
    from api.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher(stack.redis_url, stack.redis_url, poll_interval=0.2)
    publisher = redis.Redis.from_url(stack.redis_url)
    try:
        early = secrets.token_hex(16)
        dispatcher.listen_for(early)
        publisher.publish(done_channel(early), "succeeded")
        assert dispatcher.wait(early, timeout=2) == "succeeded"
        # A listen no wait takes is released, as is every wait when it ends.
        late = secrets.token_hex(16)
        dispatcher.listen_for(late)
        assert dispatcher._completions.waiting == 1
        dispatcher.stop_listening(late)
        assert dispatcher._completions.waiting == 0
        assert dispatcher.wait(late, timeout=0.3) is None
        assert dispatcher._completions.waiting == 0
    finally:
        publisher.close()
        dispatcher.close()


def test_waits_share_one_redis_connection(stack: Stack) -> None:
    """Completions are heard on one connection per dispatcher, not one per wait (a
    ``PubSub`` per call connected and disconnected on the synchronous route's path)."""
    from api.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher(stack.redis_url, stack.redis_url, poll_interval=0.2)
    publisher = redis.Redis.from_url(stack.redis_url)
    try:
        dispatcher.listen_for(secrets.token_hex(16))  # the listener connects once
        before = publisher.info("stats")["total_connections_received"]
        for _ in range(20):
            job_id = secrets.token_hex(16)
            dispatcher.listen_for(job_id)
            publisher.publish(done_channel(job_id), "failed")
            assert dispatcher.wait(job_id, timeout=2) == "failed"
        assert publisher.info("stats")["total_connections_received"] - before < 5
    finally:
        publisher.close()
        dispatcher.close()


def test_the_listener_reconnects_after_its_connection_is_killed(stack: Stack) -> None:
    from api.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher(stack.redis_url, stack.redis_url, poll_interval=0.2)
    publisher = redis.Redis.from_url(stack.redis_url)
    try:
        first = secrets.token_hex(16)
        dispatcher.listen_for(first)
        assert publisher.client_kill_filter(_type="pubsub") >= 1  # Redis drops it
        # The waiter is woken to ask the database (which knows no such job here) and
        # goes on waiting; the listener subscribes again and hears the next message.
        listener = dispatcher._completions
        wait_until(lambda: listener.subscriptions == 2 and listener.listening, 10,
                   "subscribed again", interval=0.05)
        later = secrets.token_hex(16)
        dispatcher.listen_for(later)
        publisher.publish(done_channel(later), "succeeded")
        assert dispatcher.wait(later, timeout=3) == "succeeded"
        dispatcher.stop_listening(first)
    finally:
        publisher.close()
        dispatcher.close()


