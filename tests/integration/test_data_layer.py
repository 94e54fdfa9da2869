"""The shared data layer on SQLite and PostgreSQL: state machine, audit, isolation,
pagination, encryption at rest, key rotation, retention, batches, webhooks, migrations."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from idcard import crypto, db
from idcard.audit import record_event
from idcard.batches import BatchItem, batch_counts, batch_jobs, batch_results, create_batch
from idcard.cli import main as cli_main
from idcard.db import (
    create_db_engine,
    dispose_engines,
    get_engine,
    new_session,
    session_scope,
)
from idcard.errors import ErrorCode, ServiceError
from idcard.inputs import STORE_REDIS
from idcard.jobs import (
    cancel_job,
    create_job,
    fail_job,
    get_job,
    job_events,
    keep_input,
    list_jobs,
    load_input,
    purge_expired,
    read_job,
    read_result,
    record_enqueued,
    start_job,
    stuck_jobs,
    succeed_job,
)
from idcard.migrate import current_revision, downgrade, head_revision, upgrade
from idcard.models import Base, EventType, Job, JobInput, Project, utcnow
from idcard.options import RecognitionOptions
from idcard.projects import (
    create_project,
    project_by_access_key,
    project_by_token,
    rotate_token,
    webhook_secret,
)
from idcard.rekey import reencrypt_all
from idcard.settings import MissingSecretKeyError, Settings
from idcard.webhooks import build_event, deliveries, encode_body, record_attempt, sign, verify

from .conftest import TEST_SECRET_KEY, throwaway_postgres, use_settings

# Fictional personal data; none of it may appear in clear anywhere in the database.
NAME = "郑秋菊"
NUMBER = "11010519491231002X"
ADDRESS = "北京市朝阳区幸福大街甲18号"
PERSONAL = (NAME, NUMBER, ADDRESS)
IMAGE = b"\xff\xd8\xff\xe0fake-jpeg " + f"{NAME} {NUMBER}".encode()
URL = f"https://files.example.com/kyc/{NUMBER}.jpg"
RESULT = {"result": {"name": NAME, "number": NUMBER, "address": ADDRESS, "sex": "女",
                     "score_info": {"blur_score": 7}}}
SCORES = {"blur_score": 7}
OPTIONS = RecognitionOptions(side="front", flags=frozenset({"detect_blur"}))
API = "api:token"
WORKER = "worker:test-host"


def new_project(s: Session, name: str = "bank") -> str:
    return create_project(s, name)["project_id"]


def new_job(s: Session, project_id: str, **kwargs: Any) -> Job:
    kwargs.setdefault("image", None if "url" in kwargs else IMAGE)
    job, created = create_job(s, project_id, kwargs.pop("options", OPTIONS), actor=API,
                              **kwargs)
    assert created
    return job


def events_of(s: Session, project_id: str, job_id: str) -> list[str]:
    return [e.event for e in job_events(s, project_id, job_id)]


def code_of(call: Callable[[], Any]) -> ErrorCode:
    with pytest.raises(ServiceError) as info:
        call()
    return info.value.code


def run_parallel(n: int, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` in ``n`` threads released together; their results."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(work())
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


# --- migrations -----------------------------------------------------------------------


def test_migrations_match_the_models(settings: Settings, database_url: str) -> None:
    assert current_revision(database_url) == head_revision() == "0004"
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_downgrade_and_upgrade_again(
    backend: str, tmp_path, request: pytest.FixtureRequest,
) -> None:
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
        else:
            admin = request.getfixturevalue("postgres_admin_url")
            url = stack.enter_context(throwaway_postgres(admin))
        upgrade(url)
        downgrade(url, "base")
        assert current_revision(url) is None
        upgrade(url)
        assert current_revision(url) == head_revision()


# --- the state machine ----------------------------------------------------------------


def test_lifecycle_success(session: Session, settings: Settings) -> None:
    s = session
    pid = new_project(s)
    job = new_job(s, pid, callback_url="https://hooks.example.com/ocr")
    assert (job.status, job.attempts, job.input_kind, job.priority) == (
        "queued", 0, "image", "interactive")
    assert job.options == {"side": "front", "flags": ["detect_blur"]}
    assert RecognitionOptions.from_dict(job.options) == OPTIONS
    record_enqueued(s, job.id, API, queue="interactive")
    s.commit()

    assert load_input(s, job.id) == IMAGE
    assert start_job(s, job.id, WORKER)
    job = get_job(s, pid, job.id)
    assert (job.status, job.attempts) == ("running", 1)
    assert job.started_at >= job.created_at
    assert succeed_job(s, job.id, RESULT, SCORES, WORKER)
    s.commit()

    job = get_job(s, pid, job.id)
    assert job.status == "succeeded" and job.finished_at >= job.started_at
    assert job.scores == SCORES and job.error_code is None
    assert job.webhook_state == "pending"
    retention = timedelta(hours=settings.result_retention_hours)
    assert job.expires_at == job.finished_at + retention
    assert job.created_at.tzinfo is not None
    assert s.get(JobInput, job.id) is None
    assert code_of(lambda: load_input(s, job.id)) is ErrorCode.JOB_NOT_FOUND

    assert read_result(s, pid, job.id, API) == RESULT
    s.commit()
    assert events_of(s, pid, job.id) == [
        "created", "enqueued", "started", "succeeded", "input_deleted", "result_read"]
    trail = job_events(s, pid, job.id)
    assert [e.actor for e in trail] == [API, API, WORKER, WORKER, WORKER, API]
    assert trail[3].detail["attempts"] == 1 and trail[3].detail["duration_ms"] >= 0
    assert trail[1].detail == {"queue": "interactive"}

    # Finished is final: no second start or finish.
    assert not start_job(s, job.id, WORKER)
    assert not start_job(s, job.id, WORKER, retry=True)
    assert not succeed_job(s, job.id, RESULT, SCORES, WORKER)
    assert not fail_job(s, job.id, ErrorCode.NO_CARD, "no card", WORKER)


def _lifecycles(url: str) -> list[list[tuple[Any, ...]]]:
    """Five jobs through every transition that PostgreSQL does in one statement (see
    ``idcard.jobs._transition_pg``) at fixed times; each job's trail and final row."""
    t0 = utcnow().replace(microsecond=0)
    at = [t0 + timedelta(milliseconds=ms) for ms in (0, 1250, 4321, 9999)]
    out = []
    with session_scope(url) as s:
        pid = new_project(s)
        stash: dict[str, bytes] = {}
        jobs = [new_job(s, pid, now=at[0]), new_job(s, pid, url=URL, now=at[0]),
                new_job(s, pid, now=at[0]), new_job(s, pid, now=at[0], stash=stash.__setitem__),
                new_job(s, pid, now=at[0])]
        ids = [j.id for j in jobs]
    with session_scope(url) as s:
        started = [start_job(s, i, WORKER, now=at[1]) for i in ids[:2] + ids[3:]]
        assert started == [True] * 4
        assert start_job(s, ids[4], WORKER, retry=True, now=at[2])  # a redelivery
        assert succeed_job(s, ids[0], RESULT, SCORES, WORKER, now=at[3])
        assert fail_job(s, ids[1], ErrorCode.URL_DOWNLOAD_FAILED, "download failed", WORKER,
                        now=at[3])
        assert fail_job(s, ids[2], ErrorCode.NOT_READY, "queue down", API, now=at[2])
        assert succeed_job(s, ids[3], RESULT, None, WORKER, now=at[3])
        assert not succeed_job(s, ids[2], RESULT, None, WORKER, now=at[3])  # ended
    with session_scope(url, autocommit=True) as s:
        # The sync route's answer: the job and, when it has a result, an audited read.
        reads = [read_job(s, pid, i, API, purpose="sync", now=at[3]) for i in ids[:3]]
        assert [body for _, body in reads] == [RESULT, None, None]
        assert [job.status for job, _ in reads] == ["succeeded", "failed", "failed"]
        other = new_project(s, "another bank")
        assert code_of(lambda: read_job(s, other, ids[0], API)) is ErrorCode.JOB_NOT_FOUND
        assert code_of(lambda: read_job(s, pid, "0" * 32, API)) is ErrorCode.JOB_NOT_FOUND
    with session_scope(url) as s:
        for job_id in ids:
            job = s.get(Job, job_id)
            assert job is not None
            trail = [(e.event, e.actor, e.at - t0, e.detail)
                     for e in job_events(s, pid, job_id)]
            out.append(trail + [(job.status, job.attempts, job.error_code, job.scores,
                                 job.webhook_state, s.get(JobInput, job_id) is None)])
    return out


def test_postgresql_single_statement_transitions_match_the_portable_ones(
    sqlite_url: str, postgresql_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_settings(monkeypatch, secret_key=TEST_SECRET_KEY)
    try:
        pg, lite = _lifecycles(postgresql_url), _lifecycles(sqlite_url)
    finally:
        dispose_engines()
    assert pg == lite
    assert [e[0] for e in pg[0]][:-1] == ["created", "started", "succeeded", "input_deleted",
                                          "result_read"]
    assert pg[0][4][3] == {"purpose": "sync"}
    assert "result_read" not in [e[0] for e in pg[1]]  # no body, no read
    assert pg[0][2][3] == {"attempts": 1, "duration_ms": 8749}
    assert pg[1][1][3] == {"attempts": 1, "wait_ms": 1250}
    assert pg[2][1][3] == {"code": "IDC.0503", "attempts": 0}  # never started
    assert [e[0] for e in pg[4]][:-1] == ["created", "started", "retried"]


def test_a_stashed_photo_stays_out_of_the_database_until_kept(session: Session) -> None:
    """The sync route's photo goes to a stash (Redis in the service), encrypted; the job
    says so. ``keep_input`` moves it into job_inputs only while the job has not ended."""
    s = session
    pid = new_project(s)
    stashed: dict[str, bytes] = {}
    job = new_job(s, pid, stash=stashed.__setitem__)
    s.commit()
    assert job.input_store == STORE_REDIS and s.get(JobInput, job.id) is None
    assert set(stashed) == {job.id} and IMAGE not in stashed[job.id]
    assert crypto.decrypt(stashed[job.id]) == IMAGE
    assert code_of(lambda: load_input(s, job.id)) is ErrorCode.JOB_NOT_FOUND

    assert keep_input(s, job.id, stashed[job.id])  # the call timed out: the job goes on
    s.commit()
    assert get_job(s, pid, job.id).input_store is None
    assert load_input(s, job.id) == IMAGE
    assert not keep_input(s, job.id, stashed[job.id])  # not stashed any more

    # Ending a stashed job records the photo's deletion (the caller deletes the copy).
    other = new_job(s, pid, stash=stashed.__setitem__)
    assert start_job(s, other.id, WORKER)
    assert succeed_job(s, other.id, RESULT, SCORES, WORKER)
    s.commit()
    assert not keep_input(s, other.id, stashed[other.id])  # ended: nothing is kept
    assert s.get(JobInput, other.id) is None
    assert events_of(s, pid, other.id) == ["created", "started", "succeeded",
                                           "input_deleted"]


def test_a_failing_stash_creates_no_job(session: Session) -> None:
    s = session
    pid = new_project(s)

    def down(job_id: str, data: bytes) -> None:
        raise ConnectionError("redis down")

    with pytest.raises(ConnectionError):
        new_job(s, pid, stash=down)
    s.rollback()
    assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_lifecycle_failure_of_a_url_job(session: Session) -> None:
    s = session
    pid = new_project(s)
    job = new_job(s, pid, url=URL, priority="bulk")
    assert job.input_kind == "url" and job.priority == "bulk"
    assert load_input(s, job.id) == URL
    assert start_job(s, job.id, WORKER)
    assert fail_job(s, job.id, ErrorCode.URL_DOWNLOAD_FAILED, "download failed", WORKER)
    s.commit()
    job = get_job(s, pid, job.id)
    assert (job.status, job.error_code, job.error_msg) == (
        "failed", "IDC.0201", "download failed")
    assert job.url_enc is None and job.webhook_state is None
    assert read_result(s, pid, job.id, API) is None
    assert code_of(lambda: load_input(s, job.id)) is ErrorCode.JOB_NOT_FOUND
    assert events_of(s, pid, job.id) == ["created", "started", "failed", "input_deleted"]
    assert job_events(s, pid, job.id)[2].detail["code"] == "IDC.0201"


def test_a_queued_job_can_fail_without_starting(session: Session) -> None:
    pid = new_project(session)
    job = new_job(session, pid)
    assert fail_job(session, job.id, "AIS.0105", "recognition failed", "system:reconciler")
    assert get_job(session, pid, job.id).status == "failed"
    assert not start_job(session, job.id, WORKER)


def test_retry_restarts_a_running_job_only_when_asked(session: Session) -> None:
    s = session
    pid = new_project(s)
    job = new_job(s, pid)
    assert start_job(s, job.id, WORKER)
    assert not start_job(s, job.id, "worker:other")  # a duplicate message
    assert start_job(s, job.id, "worker:other", retry=True)  # the first worker died
    job = get_job(s, pid, job.id)
    assert (job.status, job.attempts) == ("running", 2)
    assert events_of(s, pid, job.id) == ["created", "started", "retried"]
    assert job_events(s, pid, job.id)[2].detail["attempts"] == 2


def test_concurrent_starts_exactly_one_wins(clean_db: Settings) -> None:
    with session_scope() as s:
        pid = new_project(s)
        ids = [new_job(s, pid).id for _ in range(4)]
    for job_id in ids:
        def start(job_id: str = job_id) -> bool:
            with session_scope() as s:
                return start_job(s, job_id, WORKER)

        assert sorted(run_parallel(2, start)) == [False, True]
        with session_scope() as s:
            job = get_job(s, pid, job_id)
            assert (job.status, job.attempts) == ("running", 1)
            assert events_of(s, pid, job_id).count("started") == 1


def test_concurrent_finishes_exactly_one_wins(clean_db: Settings) -> None:
    with session_scope() as s:
        pid = new_project(s)
        job_id = new_job(s, pid).id
        assert start_job(s, job_id, WORKER)

    def succeed() -> bool:
        with session_scope() as s:
            return succeed_job(s, job_id, RESULT, SCORES, WORKER)

    def fail() -> bool:
        with session_scope() as s:
            return fail_job(s, job_id, ErrorCode.RECOGNITION_FAILED, "failed", WORKER)

    results = run_parallel(2, succeed) + run_parallel(1, fail)
    assert sorted(results) == [False, False, True]
    with session_scope() as s:
        assert events_of(s, pid, job_id).count("succeeded") == 1


def test_cancel_rules(session: Session) -> None:
    s = session
    pid = new_project(s)
    queued = new_job(s, pid)
    cancelled = cancel_job(s, pid, queued.id, API)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert s.get(JobInput, queued.id) is None
    assert cancel_job(s, pid, queued.id, API).status == "cancelled"  # idempotent
    assert not start_job(s, queued.id, WORKER)
    assert events_of(s, pid, queued.id) == ["created", "cancelled", "input_deleted"]

    running = new_job(s, pid)
    start_job(s, running.id, WORKER)
    assert code_of(lambda: cancel_job(s, pid, running.id, API)) is ErrorCode.JOB_NOT_CANCELLABLE
    succeed_job(s, running.id, RESULT, SCORES, WORKER)
    assert code_of(lambda: cancel_job(s, pid, running.id, API)) is ErrorCode.JOB_NOT_CANCELLABLE
    assert ErrorCode.JOB_NOT_CANCELLABLE.http_status == 409


# --- idempotency ----------------------------------------------------------------------


def test_idempotency_key(session: Session) -> None:
    s = session
    pid, other = new_project(s), new_project(s, "other")
    first, created = create_job(s, pid, OPTIONS, image=IMAGE, idempotency_key="k-1", actor=API)
    assert created
    again, created = create_job(s, pid, OPTIONS, image=IMAGE, idempotency_key="k-1", actor=API)
    assert (again.id, created) == (first.id, False)

    for different in (
        {"image": IMAGE + b"!"},
        {"url": URL},
        {"image": IMAGE, "options": RecognitionOptions(side="back")},
        {"image": IMAGE, "priority": "bulk"},
        {"image": IMAGE, "callback_url": "https://hooks.example.com/x"},
    ):
        options = different.pop("options", OPTIONS)
        with pytest.raises(ServiceError) as info:
            create_job(s, pid, options, idempotency_key="k-1", actor=API, **different)
        assert info.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
        assert info.value.http_status == 409
        assert info.value.message == "Idempotency-Key reused with a different request"

    # Keys are per project.
    theirs, created = create_job(s, other, OPTIONS, image=IMAGE, idempotency_key="k-1",
                                 actor=API)
    assert created and theirs.id != first.id
    assert s.scalar(select(Job.id).where(Job.project_id == pid).limit(2).order_by(Job.id)
                    ) == first.id
    assert len(list_jobs(s, pid)[0]) == 1
    assert events_of(s, pid, first.id) == ["created"]
    assert code_of(lambda: create_job(s, pid, OPTIONS, image=IMAGE, idempotency_key="a b",
                                      actor=API)) is ErrorCode.INVALID_PARAMETER


def test_idempotency_key_under_concurrency(clean_db: Settings) -> None:
    with session_scope() as s:
        pid = new_project(s)

    def submit() -> tuple[str, bool]:
        with session_scope() as s:
            job, created = create_job(s, pid, OPTIONS, image=IMAGE, idempotency_key="race",
                                      actor=API)
            return job.id, created

    results = run_parallel(4, submit)
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]


def test_create_job_validates_its_input(session: Session) -> None:
    pid = new_project(session)
    for kwargs in ({}, {"image": IMAGE, "url": URL}, {"image": IMAGE, "priority": "urgent"}):
        assert code_of(lambda kw=kwargs: create_job(session, pid, OPTIONS, actor=API, **kw)
                       ) is ErrorCode.INVALID_PARAMETER


# --- isolation and reads --------------------------------------------------------------


def test_another_project_sees_nothing(session: Session) -> None:
    s = session
    a, b = new_project(s, "a"), new_project(s, "b")
    job = new_job(s, a)
    start_job(s, job.id, WORKER)
    succeed_job(s, job.id, RESULT, SCORES, WORKER)
    queued = new_job(s, a)
    for call in (
        lambda: get_job(s, b, job.id),
        lambda: read_result(s, b, job.id, API),
        lambda: job_events(s, b, job.id),
        lambda: cancel_job(s, b, queued.id, API),
        lambda: get_job(s, a, "not-a-job-id"),
        lambda: get_job(s, a, "0" * 32),
    ):
        code = code_of(call)
        assert code is ErrorCode.JOB_NOT_FOUND and code.http_status == 404
    assert list_jobs(s, b) == ([], None)
    assert get_job(s, a, queued.id).status == "queued"
    assert "result_read" not in events_of(s, a, job.id)


def test_list_pagination_has_no_duplicates_or_gaps(session: Session) -> None:
    s = session
    pid = new_project(s)
    other = new_project(s, "other")
    new_job(s, other)
    base = utcnow() - timedelta(hours=1)
    # 25 jobs; some share a creation instant, so the id must break ties.
    ids = [new_job(s, pid, now=base + timedelta(seconds=i // 3)).id for i in range(25)]
    s.commit()

    seen, cursor, pages = [], None, []
    while True:
        page, cursor = list_jobs(s, pid, limit=10, cursor=cursor)
        pages.append(len(page))
        seen += page
        if cursor is None:
            break
    assert pages == [10, 10, 5]
    assert sorted(j.id for j in seen) == sorted(ids)
    assert len({j.id for j in seen}) == 25
    keys = [(j.created_at, j.id) for j in seen]
    assert keys == sorted(keys, reverse=True)

    # Filters.
    start_job(s, ids[0], WORKER)
    assert [j.id for j in list_jobs(s, pid, status="running")[0]] == [ids[0]]
    after = base + timedelta(seconds=5)
    window, _ = list_jobs(s, pid, created_after=after, created_before=after + timedelta(
        seconds=2))
    assert sorted(j.id for j in window) == sorted(ids[15:21])
    # Listings leave results unloaded; a later read in the same session still gets them.
    start_job(s, ids[1], WORKER)
    succeed_job(s, ids[1], RESULT, SCORES, WORKER)
    s.commit()
    assert list_jobs(s, pid, limit=200)[0]
    assert read_result(s, pid, ids[1], API) == RESULT

    naive = datetime.now()
    for bad in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 1000},
                {"status": "done"}, {"created_after": naive}):
        assert code_of(lambda kw=bad: list_jobs(s, pid, **kw)) is ErrorCode.INVALID_PARAMETER


# --- personal data --------------------------------------------------------------------


def _raw_rows(s: Session, table: str) -> list[bytes]:
    """Every value of every row, as bytes, the way the database stores it."""
    out = []
    for row in s.execute(text(f"SELECT * FROM {table}")):
        for value in row:
            if value is None:
                continue
            if isinstance(value, (bytes, memoryview)):
                out.append(bytes(value))
            else:
                out.append(json.dumps(value, ensure_ascii=False, default=str).encode())
    return out


def test_personal_data_is_encrypted_at_rest(session: Session) -> None:
    s = session
    creds = create_project(s, "bank")
    pid = creds["project_id"]
    image_job = new_job(s, pid, client_reference="app-42")
    url_job = new_job(s, pid, url=URL)
    s.commit()
    stored_input = s.get(JobInput, image_job.id).data_enc
    assert stored_input != IMAGE and crypto.decrypt(stored_input) == IMAGE
    start_job(s, image_job.id, WORKER)
    succeed_job(s, image_job.id, RESULT, SCORES, WORKER)
    read_result(s, pid, image_job.id, API)
    start_job(s, url_job.id, WORKER)
    s.commit()

    needles = [p.encode() for p in PERSONAL] + [URL.encode(), b"fake-jpeg"]
    needles += [creds[k].encode() for k in ("sk", "token", "webhook_secret")]
    for table in ("projects", "jobs", "job_inputs", "job_events", "batches",
                  "webhook_deliveries"):
        for value in _raw_rows(s, table):
            for needle in needles:
                assert needle not in value, (table, needle)
    assert s.get(Job, image_job.id).result_enc is not None
    assert s.get(Job, url_job.id).url_enc is not None


def test_audit_detail_refuses_personal_data(session: Session) -> None:
    pid = new_project(session)
    job = new_job(session, pid)
    for detail in ({"name": NAME}, {"reason": URL}, {"reason": NAME}, {"code": ["x"]}):
        with pytest.raises(ValueError):
            record_event(session, job.id, pid, EventType.FAILED, WORKER, **detail)
    with pytest.raises(ValueError):
        record_event(session, job.id, pid, EventType.FAILED, f"user:{NAME}")
    with pytest.raises(ValueError):
        succeed_job(session, job.id, RESULT, {"name": NAME}, WORKER)


def test_key_rotation(session: Session, monkeypatch: pytest.MonkeyPatch,
                      settings: Settings) -> None:
    s = session
    key_a, key_b = TEST_SECRET_KEY, "the-new-key-for-rotation-0123456789"
    creds = create_project(s, "bank")
    pid = creds["project_id"]
    done = new_job(s, pid)
    start_job(s, done.id, WORKER)
    succeed_job(s, done.id, RESULT, SCORES, WORKER)
    pending = new_job(s, pid)
    s.commit()
    token_a = crypto.encrypt(b"secret")

    # B only: nothing made under A can be read.
    use_settings(monkeypatch, secret_key=key_b)
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token_a)
    assert project_by_token(s, creds["token"]) is None

    # B first, A still listed: everything reads; new data is encrypted with B.
    use_settings(monkeypatch, secret_key=f"{key_b},{key_a}")
    assert crypto.decrypt(token_a) == b"secret"
    rotated = crypto.rotate(token_a)
    assert read_result(s, pid, done.id, API) == RESULT
    assert load_input(s, pending.id) == IMAGE
    assert project_by_access_key(s, creds["ak"])[1] == creds["sk"]
    project = project_by_token(s, creds["token"])  # re-hashed under B on the way
    assert project is not None and project.id == pid
    s.commit()
    assert reencrypt_all(s) == 2 + 2  # project secrets, one result, one input

    # B alone is enough now.
    use_settings(monkeypatch, secret_key=key_b)
    assert crypto.decrypt(rotated) == b"secret"
    assert read_result(s, pid, done.id, API) == RESULT
    assert load_input(s, pending.id) == IMAGE
    project = s.get(Project, pid)
    assert webhook_secret(project) == creds["webhook_secret"]
    assert project_by_token(s, creds["token"]).id == pid
    assert project_by_access_key(s, creds["ak"])[1] == creds["sk"]


# --- retention and reconciliation -----------------------------------------------------


def test_retention_purges_results_and_inputs(session: Session, settings: Settings) -> None:
    s = session
    pid = new_project(s)
    retention = timedelta(hours=settings.result_retention_hours)
    old = utcnow() - retention - timedelta(hours=1)
    done = new_job(s, pid, now=old)
    start_job(s, done.id, WORKER, now=old)
    succeed_job(s, done.id, RESULT, SCORES, WORKER, now=old)
    forgotten = new_job(s, pid, now=old)  # never ran: its input must go too
    fresh = new_job(s, pid)
    start_job(s, fresh.id, WORKER)
    succeed_job(s, fresh.id, RESULT, SCORES, WORKER)
    s.commit()

    assert purge_expired(s) == 2
    s.commit()
    assert purge_expired(s) == 0
    assert read_result(s, pid, done.id, API) is None
    assert get_job(s, pid, done.id).purged_at is not None
    assert get_job(s, pid, done.id).status == "succeeded"  # the row and trail stay
    assert s.get(JobInput, forgotten.id) is None
    assert read_result(s, pid, fresh.id, API) == RESULT
    assert events_of(s, pid, done.id)[-1] == "result_purged"
    assert job_events(s, pid, done.id)[-1].actor == "system:retention"
    # The retention window starts when the job ends.
    assert purge_expired(s, now=utcnow() + retention + timedelta(seconds=1)) == 1


def test_stuck_jobs(session: Session) -> None:
    s = session
    pid = new_project(s)
    long_ago = utcnow() - timedelta(hours=2)
    lost = new_job(s, pid, now=long_ago)
    dead = new_job(s, pid, now=long_ago)
    start_job(s, dead.id, WORKER, now=long_ago)
    finished = new_job(s, pid, now=long_ago)
    fail_job(s, finished.id, ErrorCode.NO_CARD, "no card", WORKER, now=long_ago)
    new_job(s, pid)
    s.commit()
    stuck = stuck_jobs(s, deadline=timedelta(minutes=10))
    assert sorted(j.id for j in stuck) == sorted([lost.id, dead.id])
    assert stuck_jobs(s, deadline=timedelta(hours=3)) == []


# --- batches --------------------------------------------------------------------------


def test_batch(session: Session) -> None:
    s = session
    pid, other = new_project(s), new_project(s, "other")
    items = [BatchItem(image=IMAGE, client_reference="r0"), BatchItem(url=URL),
             BatchItem(image=IMAGE, options=RecognitionOptions(side="back"))]
    batch, jobs = create_batch(s, pid, items, OPTIONS, actor=API)
    s.commit()
    assert batch.total == 3 and batch.priority == "bulk"
    assert [j.priority for j in jobs] == ["bulk"] * 3
    assert jobs[2].options["side"] == "back" and jobs[0].client_reference == "r0"
    assert batch_counts(s, pid, batch.id) == {
        "total": 3, "queued": 3, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}

    start_job(s, jobs[0].id, WORKER)
    succeed_job(s, jobs[0].id, RESULT, SCORES, WORKER)
    start_job(s, jobs[1].id, WORKER)
    fail_job(s, jobs[1].id, ErrorCode.URL_REFUSED, "url refused", WORKER)
    assert batch_counts(s, pid, batch.id) == {
        "total": 3, "queued": 1, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0}

    assert [j.id for j in batch_jobs(s, pid, batch.id)] == [j.id for j in jobs]
    results = [(job.id, body) for job, body in batch_results(s, pid, batch.id, API)]
    assert results == [(jobs[0].id, RESULT), (jobs[1].id, None), (jobs[2].id, None)]
    assert job_events(s, pid, jobs[0].id)[-1].detail == {"purpose": "batch"}

    for call in (lambda: batch_counts(s, other, batch.id),
                 lambda: batch_jobs(s, other, batch.id),
                 lambda: batch_counts(s, pid, "0" * 32)):
        assert code_of(call) is ErrorCode.JOB_NOT_FOUND
    assert code_of(lambda: create_batch(s, pid, [], OPTIONS, actor=API)
                   ) is ErrorCode.INVALID_PARAMETER


# --- webhooks -------------------------------------------------------------------------


def test_webhook_event_signature_and_attempts(session: Session, settings: Settings) -> None:
    s = session
    creds = create_project(s, "bank")
    pid = creds["project_id"]
    job = new_job(s, pid, callback_url="https://hooks.example.com/ocr")
    start_job(s, job.id, WORKER)
    succeed_job(s, job.id, RESULT, SCORES, WORKER)
    url, event_id, body = build_event(s, job.id, "worker:webhook")
    assert url == "https://hooks.example.com/ocr"
    assert body == {"event": "job.succeeded", "event_id": event_id, "job_id": job.id,
                    "project_id": pid, "status": "succeeded", "result": RESULT}
    assert build_event(s, job.id, "worker:webhook")[1] == event_id  # stable across retries

    raw = encode_body(body)
    secret = webhook_secret(s.get(Project, pid))
    assert secret == creds["webhook_secret"]
    header = sign(secret, raw, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(secret, raw, header, now=1_700_000_010)
    assert not verify(secret, raw + b" ", header, now=1_700_000_010)
    assert not verify(secret, raw, header, now=1_700_009_999)  # too old

    first = record_attempt(s, job.id, event_id, 1, status_code=503, error=None,
                           actor="worker:webhook")
    assert first.state == "pending" and first.next_attempt_at > first.at
    record_attempt(s, job.id, event_id, 2, status_code=None, error="timeout",
                   actor="worker:webhook")
    last = record_attempt(s, job.id, event_id, 3, status_code=204, error=None,
                          actor="worker:webhook")
    assert last.state == "delivered" and last.next_attempt_at is None
    s.commit()
    assert [d.attempt for d in deliveries(s, job.id)] == [1, 2, 3]
    assert get_job(s, pid, job.id).webhook_state == "delivered"
    trail = events_of(s, pid, job.id)
    assert trail.count("webhook_attempt") == 3 and trail[-1] == "webhook_delivered"

    # Out of attempts: failed.
    failing = new_job(s, pid, callback_url="https://hooks.example.com/ocr")
    start_job(s, failing.id, WORKER)
    fail_job(s, failing.id, ErrorCode.NO_CARD, "no card", WORKER)
    _, fid, fbody = build_event(s, failing.id, "worker:webhook")
    assert fbody["event"] == "job.failed" and fbody["error_code"] == "AIS.0104"
    final = record_attempt(s, failing.id, fid, settings.webhook_max_attempts,
                           status_code=500, error=None, actor="worker:webhook")
    assert final.state == "failed"
    assert get_job(s, pid, failing.id).webhook_state == "failed"
    assert events_of(s, pid, failing.id)[-1] == "webhook_failed"


# --- projects -------------------------------------------------------------------------


def test_project_credentials(session: Session) -> None:
    s = session
    creds = create_project(s, "bank")
    assert set(creds) == {"project_id", "ak", "sk", "token", "webhook_secret"}
    assert len(creds["project_id"]) == 32 and len(creds["ak"]) == 20
    assert project_by_token(s, creds["token"]).id == creds["project_id"]
    assert project_by_token(s, creds["token"] + "x") is None
    assert project_by_token(s, "") is None
    project, sk = project_by_access_key(s, creds["ak"])
    assert (project.id, sk) == (creds["project_id"], creds["sk"])
    assert project_by_access_key(s, "NOPE") is None

    new = rotate_token(s, creds["project_id"], grace=timedelta(hours=1))
    assert project_by_token(s, new).id == creds["project_id"]
    assert project_by_token(s, creds["token"]).id == creds["project_id"]  # in grace
    later = utcnow() + timedelta(hours=2)
    assert project_by_token(s, creds["token"], now=later) is None


def test_cli_migrate_and_create_project(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    use_settings(monkeypatch, database_url=url, secret_key=TEST_SECRET_KEY)
    try:
        assert cli_main(["migrate"]) == 0
        assert current_revision(url) == head_revision()
        assert cli_main(["projects", "create", "Acme Bank"]) == 0
        creds = json.loads(capsys.readouterr().out)
        with session_scope() as s:
            assert project_by_token(s, creds["token"]).name == "Acme Bank"
        monkeypatch.delenv("IDCARD_SECRET_KEY")
        use_settings(monkeypatch)
        assert cli_main(["projects", "create", "x"]) == 2
        assert "IDCARD_SECRET_KEY" in capsys.readouterr().err
    finally:
        dispose_engines()


# --- connections ----------------------------------------------------------------------


def test_relaxed_sessions_commit_without_waiting_for_the_disk(postgresql_url: str) -> None:
    # The setting rides on the relaxed engine's connections: no statement per transaction.
    try:
        for relaxed, expected in ((True, "off"), (False, "on")):
            with session_scope(postgresql_url, relaxed=relaxed) as s:
                assert s.scalar(text("SHOW synchronous_commit")) == expected
        assert get_engine(postgresql_url, relaxed=True) is not get_engine(postgresql_url)
    finally:
        dispose_engines()


def test_autocommit_sessions_commit_each_statement(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: every statement of an autocommit session is its own transaction (a
    rollback undoes nothing); SQLite: an ordinary session."""
    use_settings(monkeypatch, secret_key=TEST_SECRET_KEY)
    try:
        s = new_session(database_url, relaxed=True, autocommit=True)
        try:
            pid = new_project(s, "autocommit")  # flushed: INSERT sent
            s.rollback()
        finally:
            s.close()
        with session_scope(database_url) as check:
            kept = check.get(Project, pid) is not None
        assert kept == database_url.startswith("postgresql")
    finally:
        dispose_engines()


def test_relaxed_is_the_ordinary_engine_on_sqlite(sqlite_url: str) -> None:
    try:
        assert get_engine(sqlite_url, relaxed=True) is get_engine(sqlite_url)
    finally:
        dispose_engines()


def _backend_pid(s: Session) -> int:
    return s.scalar(text("SELECT pg_backend_pid()"))


def _terminate(admin_url: str, pid: int) -> None:
    engine = create_db_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
    finally:
        engine.dispose()


def test_a_connection_idle_too_long_is_pinged_and_replaced(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Instead of a ping per checkout: a pooled connection idle for longer than
    PING_AFTER_IDLE_SECONDS is checked first, and a dead one replaced unseen."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
    try:
        with session_scope(postgresql_url) as s:
            first = _backend_pid(s)
        with session_scope(postgresql_url) as s:
            assert _backend_pid(s) == first  # reused (LIFO), not pinged: no error either
        _terminate(postgresql_url, first)  # the server drops it (a restart, a failover)
        time.sleep(0.3)
        with session_scope(postgresql_url) as s:
            assert _backend_pid(s) != first  # pinged, found dead, replaced: no error
    finally:
        dispose_engines()


def test_a_connection_used_recently_is_trusted_and_a_dead_one_fails_once(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No ping within PING_AFTER_IDLE_SECONDS: a connection killed meanwhile fails its
    statement with a disconnect error (IDC.0503 at the API, a retry in the worker); the
    pool drops its older connections, so the next transaction works."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    try:
        with session_scope(postgresql_url) as s:
            first = _backend_pid(s)
        _terminate(postgresql_url, first)
        with pytest.raises(OperationalError), session_scope(postgresql_url) as s:
            _backend_pid(s)
        with session_scope(postgresql_url) as s:
            assert _backend_pid(s) != first
    finally:
        dispose_engines()


# --- settings -------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDCARD_SECRET_KEY", raising=False)
    monkeypatch.delenv("IDCARD_EMBEDDED", raising=False)
    settings = use_settings(monkeypatch, url_allow_hosts=" a.example.com, B.example.com ,")
    assert settings.url_allow_hosts == ["a.example.com", "b.example.com"]
    with pytest.raises(MissingSecretKeyError, match="IDCARD_SECRET_KEY"):
        _ = settings.secret_keys
    assert use_settings(monkeypatch, embedded="1").secret_keys  # the dev default
    keys = use_settings(monkeypatch, embedded="0",
                        secret_key="first-key-0123456789, second-key-0123456789").secret_keys
    assert keys == ("first-key-0123456789", "second-key-0123456789")
    with pytest.raises(MissingSecretKeyError, match="shorter"):
        _ = use_settings(monkeypatch, secret_key="short").secret_keys
    assert "first-key" not in repr(use_settings(monkeypatch, secret_key="first-key-01234567"))


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IDCARD_"):
            monkeypatch.delenv(name)
    defaults = Settings(_env_file=None)
    assert defaults.database_url == "sqlite:///./idcard.sqlite3"
    assert defaults.redis_url == "redis://127.0.0.1:6379/0"
    assert (defaults.sync_timeout_seconds, defaults.result_retention_hours,
            defaults.job_deadline_seconds) == (30, 168, 600)
    assert (defaults.webhook_max_attempts, defaults.webhook_backoff_base_seconds,
            defaults.webhook_timeout_seconds) == (8, 2, 5)
    assert defaults.url_max_bytes == 10 * 1024 * 1024 and defaults.url_allow_hosts == []


def test_large_ciphertext_is_stored_uncompressed_and_binary(postgresql_url: str) -> None:
    # Migration 0003: no pglz attempt on ciphertext (which is binary, idcard.crypto).
    from sqlalchemy import text

    engine = create_db_engine(postgresql_url)
    try:
        with engine.connect() as conn:
            storage = dict(conn.execute(text(
                "SELECT c.relname || '.' || a.attname, a.attstorage FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid WHERE a.attname IN "
                "('data_enc', 'result_enc') AND c.relname IN ('job_inputs', 'jobs')")).all())
    finally:
        engine.dispose()
    assert storage == {"job_inputs.data_enc": "e", "jobs.result_enc": "e"}
