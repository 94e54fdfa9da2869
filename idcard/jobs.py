"""The job state machine: queued → running → succeeded | failed | cancelled.

Plain functions on a caller's ``Session``; they flush but never commit, so a caller's
``session_scope()`` makes each one atomic. Every transition is a conditional UPDATE
(``... WHERE id = ? AND status IN (...)``) whose row count decides who won, so two
workers can never both start or both finish a job. Every transition and every read of a
result adds an audit event (``idcard.audit``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
    Row,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from idcard import crypto
from idcard.audit import checked_actor, checked_detail, record_event
from idcard.errors import ErrorCode, ServiceError
from idcard.inputs import STORE_REDIS
from idcard.models import (
    EventType,
    InputKind,
    Job,
    JobEvent,
    JobInput,
    JobStatus,
    Priority,
    UTCDateTime,
    WebhookState,
    utcnow,
)
from idcard.options import RecognitionOptions
from idcard.settings import get_settings

MAX_LIST_LIMIT = 200
# Loader options for listings: a result (with base64 images) can weigh megabytes, and is
# loaded only when ``read_result``/``result_of`` asks for it.
LIGHT = (defer(Job.result_enc), defer(Job.url_enc))
# Celery queue per latency class; the API sends to it and the worker consumes it.
QUEUE_BY_PRIORITY = {Priority.INTERACTIVE: "interactive", Priority.BULK: "bulk"}

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
_SCORE_KEY = re.compile(r"[a-z_]{1,40}_score")


def queue_for(priority: Priority | str) -> str:
    return QUEUE_BY_PRIORITY[Priority(priority)]


def _retention() -> timedelta:
    return timedelta(hours=get_settings().result_retention_hours)


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message)


def _not_found() -> ServiceError:
    return ServiceError(ErrorCode.JOB_NOT_FOUND, "job not found")


def _reload(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return None if start is None or end is None else int((end - start).total_seconds() * 1000)


# --- creation -------------------------------------------------------------------------


def _request_hashes(
    payload: bytes,
    kind: InputKind,
    options: RecognitionOptions,
    priority: Priority,
    callback_url: str | None,
    client_reference: str | None,
) -> list[str]:
    # Keyed, not a bare SHA-256: a URL body is guessable and could otherwise be brute-
    # forced from the hash. Candidates under every key keep replays working across a
    # SECRET_KEY rotation. The canonical form ignores JSON key order and whitespace.
    meta = json.dumps(
        [kind.value, options.to_dict(), priority.value, callback_url, client_reference],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")
    return crypto.keyed_hash_candidates("request", meta + b"\0" + payload)


def _replay(existing: Job, hashes: list[str]) -> tuple[Job, bool]:
    if existing.request_hash in hashes:
        return existing, False
    raise ServiceError(
        ErrorCode.IDEMPOTENCY_CONFLICT, "Idempotency-Key reused with a different request"
    )


def _by_idempotency_key(session: Session, project_id: str, key: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.project_id == project_id, Job.idempotency_key == key)
    ).one_or_none()


def create_job(
    session: Session,
    project_id: str,
    options: RecognitionOptions,
    *,
    image: bytes | None = None,
    url: str | None = None,
    priority: Priority | str = Priority.INTERACTIVE,
    callback_url: str | None = None,
    client_reference: str | None = None,
    idempotency_key: str | None = None,
    actor: str,
    batch_id: str | None = None,
    now: datetime | None = None,
    stash: Callable[[str, bytes], None] | None = None,
) -> tuple[Job, bool]:
    """A new queued job holding its (encrypted) input; ``(job, created)``.

    ``stash(job_id, encrypted_image)``: where an image goes instead of ``job_inputs``
    (the synchronous route's Redis, ``idcard.inputs``); the job records it as
    ``input_store='redis'``. Called before anything is written: if it raises, no job.

    With an ``idempotency_key``: the same key with the same request answers the existing
    job and ``created=False``; with another request, ``IDC.0409``. The caller enqueues
    the job id after committing, then calls ``record_enqueued``.
    """
    if (image is None) == (url is None):
        raise _invalid("exactly one of image and url is required")
    try:
        priority = Priority(priority)
    except ValueError:
        raise _invalid("priority must be interactive or bulk") from None
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise _invalid("Idempotency-Key must be 1-255 printable ASCII characters")
    kind = InputKind.IMAGE if image is not None else InputKind.URL
    payload = image if image is not None else url.encode("utf-8")  # type: ignore[union-attr]

    hashes: list[str] = []
    if idempotency_key is not None:
        hashes = _request_hashes(payload, kind, options, priority, callback_url,
                                 client_reference)
        existing = _by_idempotency_key(session, project_id, idempotency_key)
        if existing is not None:
            return _replay(existing, hashes)

    now = now or utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        project_id=project_id,
        batch_id=batch_id,
        status=JobStatus.QUEUED.value,
        priority=priority.value,
        options=options.to_dict(),
        input_kind=kind.value,
        url_enc=crypto.encrypt_text(url) if url is not None else None,
        callback_url=callback_url,
        client_reference=client_reference,
        idempotency_key=idempotency_key,
        request_hash=hashes[0] if hashes else None,
        created_at=now,
        attempts=0,
        # Backstop for a job that never ends; reset from finished_at when it does.
        expires_at=now + _retention(),
    )
    rows: list[Job | JobInput] = [job]
    if image is not None and stash is not None:
        stash(job.id, crypto.encrypt(image))
        job.input_store = STORE_REDIS
    elif image is not None:
        rows.append(JobInput(job_id=job.id, data_enc=crypto.encrypt(image)))
    if idempotency_key is None:
        session.add_all(rows)  # nothing to race on: no savepoint round trips
    else:
        try:
            # A savepoint, so that losing an idempotency race leaves the caller's
            # transaction usable.
            with session.begin_nested():
                session.add_all(rows)
        except IntegrityError:
            existing = _by_idempotency_key(session, project_id, idempotency_key)
            if existing is None:
                raise
            return _replay(existing, hashes)
    record_event(session, job.id, project_id, EventType.CREATED, actor, at=now,
                 input_kind=kind.value, priority=priority.value, batch_id=batch_id)
    session.flush()
    return job, True


def record_enqueued(session: Session, job_id: str, actor: str, queue: str) -> None:
    """Audit the hand-over to the broker (also when the reconciler re-enqueues)."""
    job = session.get(Job, job_id)
    if job is None:
        raise _not_found()
    record_event(session, job.id, job.project_id, EventType.ENQUEUED, actor, queue=queue)
    session.flush()


# --- transitions ----------------------------------------------------------------------


# What a transition reads back from the row it changed (UPDATE ... RETURNING): the
# audit event and the caller need these, and reading them costs no extra round trip.
_RETURNED = (Job.id, Job.project_id, Job.status, Job.attempts, Job.created_at,
             Job.started_at, Job.input_kind, Job.input_store, Job.options, Job.callback_url)


def _transition(session: Session, job_id: str, from_: tuple[JobStatus, ...],
                **values: Any) -> Row[Any] | None:
    """The conditional UPDATE; the changed row's ``_RETURNED`` columns, or None when the
    job was not in one of ``from_`` (someone else moved it first)."""
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in from_]))
        .values(**values)
        .returning(*_RETURNED)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is not None:
        _expire_held(session, job_id)
    return row


def _expire_held(session: Session, job_id: str) -> None:
    # A copy of this job that the caller's session holds is stale after a transition:
    # reloaded when next read (the worker holds none, so nothing is read back on its
    # path).
    held = session.identity_map.get(session.identity_key(Job, (job_id,)))
    if held is not None:
        session.expire(held)


# --- PostgreSQL: a transition and its audit events in one statement ------------------
#
# On PostgreSQL a transition, the deletion of an ended job's input and the audit events
# are one statement (data-modifying CTEs): atomic by itself, so a caller in autocommit
# mode (``idcard.db.new_session(autocommit=True)``) pays one round trip for it instead
# of four (BEGIN, UPDATE, INSERT, COMMIT), each a wake-up of two processes. Each
# statement is built once, with bound parameters: built per call, SQLAlchemy's
# construction cost as much as the round trips saved. SQLite cannot modify data in a
# CTE and runs the same steps as separate statements in the caller's transaction;
# tests/integration/test_data_layer.py checks that both leave the same rows.

_NOW = bindparam("now", type_=UTCDateTime())
_PENDING_IF_CALLBACK = case((Job.callback_url.is_not(None), WebhookState.PENDING.value),
                            else_=None)

# What each transition sets; bound parameters are given per call (``_values`` turns them
# into plain values for the SQLite path).
# What every ending sets besides its status and result or error: the URL (it may name a
# person) goes, the retention clock starts, a webhook becomes due if there is one.
_ENDING: dict[str, Any] = {
    "finished_at": _NOW,
    "url_enc": None,
    "expires_at": bindparam("expires_at", type_=UTCDateTime()),
    "webhook_state": _PENDING_IF_CALLBACK,
}
_SET: dict[str, dict[str, Any]] = {
    "start": {"status": JobStatus.RUNNING.value, "started_at": _NOW,
              "attempts": Job.attempts + 1},
    "succeed": {
        "status": JobStatus.SUCCEEDED.value,
        "result_enc": bindparam("result_enc", type_=Job.result_enc.type),
        "scores": bindparam("scores", type_=Job.scores.type),
        "error_code": None,
        "error_msg": None,
        **_ENDING,
    },
    "fail": {
        "status": JobStatus.FAILED.value,
        "error_code": bindparam("code", type_=Job.error_code.type),
        "error_msg": bindparam("msg", type_=Job.error_msg.type),
        **_ENDING,
    },
}


def _values(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    return {column: params[value.key] if isinstance(value, BindParameter) else value
            for column, value in _SET[kind].items()}


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _ms_since(start: Any) -> Any:
    """``_ms(start, now)`` in SQL (NULL when ``start`` is)."""
    return cast(func.floor(func.extract("epoch", _NOW - start) * 1000), Integer)


def _json_detail(detail: dict[str, Any]) -> Any:
    # NULL values are left out, as record_event leaves out None.
    args = [x for key, value in detail.items() for x in (literal(key), value)]
    return func.json_strip_nulls(func.json_build_object(*args), type_=JobEvent.detail.type)


@functools.cache
def _pg_statement(kind: str, from_: tuple[JobStatus, ...], event: EventType) -> Any:
    """The one statement of transition ``kind`` from ``from_``, recording ``event``:
    the conditional UPDATE; for an ending, the deletion of the input and its
    ``input_deleted`` event (what ``_end_events`` does); it answers the changed row's
    ``_RETURNED`` columns. Parameters: ``job_id``, ``now``, ``actor`` and the kind's."""
    changed = (
        update(Job)
        .where(Job.id == bindparam("job_id"), Job.status.in_([s.value for s in from_]))
        .values(**_SET[kind]).returning(*_RETURNED).cte("changed")
    )
    c = changed.c
    detail: dict[str, Any] = {"attempts": c.attempts}
    if kind == "fail":
        detail = {"code": bindparam("code", type_=String), **detail}
    detail.update({"wait_ms": _ms_since(c.created_at)} if kind == "start"
                  else {"duration_ms": _ms_since(c.started_at)})
    events = [(event, detail, true())]
    ctes = []
    if kind != "start":
        # A stashed photo has no row here (keep_input clears input_store as it adds one).
        deleted = (delete(JobInput)
                   .where(JobInput.job_id == bindparam("job_id"), exists(select(c.id)))
                   .returning(JobInput.job_id).cte("deleted"))
        ctes.append(deleted)
        events.append((EventType.INPUT_DELETED, {"input_kind": c.input_kind},
                       or_(exists(select(deleted.c.job_id)),
                           c.input_kind == InputKind.URL.value,
                           c.input_store == STORE_REDIS)))
    rows = union_all(*[
        select(c.id.label("job_id"), c.project_id.label("project_id"), _NOW.label("at"),
               bindparam("actor", type_=String).label("actor"),
               literal(name.value).label("event"), _json_detail(fields).label("detail"),
               literal(n).label("n")).where(when)
        for n, (name, fields, when) in enumerate(events)
    ]).subquery("new_events")
    inserted = insert(JobEvent).from_select(
        ["job_id", "project_id", "at", "actor", "event", "detail"],
        # In this order: the ending event's id comes before input_deleted's.
        select(rows.c.job_id, rows.c.project_id, rows.c.at, rows.c.actor, rows.c.event,
               rows.c.detail).order_by(rows.c.n),
    ).cte("inserted")
    return select(*c).add_cte(*ctes, inserted)


def _transition_pg(session: Session, kind: str, job_id: str, from_: tuple[JobStatus, ...],
                   event: EventType, actor: str, params: dict[str, Any]) -> Row[Any] | None:
    """``_pg_statement`` run: the changed row, or None (not in ``from_``)."""
    params = {**params, "job_id": job_id, "actor": checked_actor(actor)}
    row = session.execute(_pg_statement(kind, from_, event), params).one_or_none()
    if row is not None:
        _expire_held(session, job_id)
    return row


def _end_events(session: Session, job: Row[Any], event: EventType, actor: str,
                now: datetime, **detail: Any) -> None:
    """The ending event, then the deletion of the input: the image by reference dies
    with the job; so does the URL (it may name a person), which the transition itself
    has already set to NULL. The DELETE goes first so that both events are inserted by
    one statement. A photo stashed in Redis is deleted there by the caller right after
    the commit (``idcard.inputs``)."""
    # A stashed photo has no row here (keep_input clears input_store as it adds one).
    deleted = 0 if job.input_store == STORE_REDIS else session.execute(
        delete(JobInput).where(JobInput.job_id == job.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    record_event(session, job.id, job.project_id, event, actor, at=now, **detail)
    if deleted or job.input_kind == InputKind.URL.value or job.input_store == STORE_REDIS:
        record_event(session, job.id, job.project_id, EventType.INPUT_DELETED, actor, at=now,
                     input_kind=job.input_kind)
    session.flush()


def start_job(
    session: Session, job_id: str, actor: str, *, retry: bool = False,
    now: datetime | None = None,
) -> bool:
    """queued → running (attempts + 1). False when the job is not startable.

    ``retry=True`` also restarts a job left 'running' by a worker that died (a redelivered
    message), recording 'retried'. Only one of two concurrent callers gets True from a
    queued job.
    """
    return begin_job(session, job_id, actor, retry=retry, now=now) is not None


def begin_job(
    session: Session, job_id: str, actor: str, *, retry: bool = False,
    now: datetime | None = None,
) -> Row[Any] | None:
    """``start_job`` answering the started job's ``id, project_id, status, attempts,
    created_at, started_at, input_kind, input_store, options, callback_url`` (None: not
    started)."""
    now = now or utcnow()
    if _on_postgresql(session):
        job = _transition_pg(session, "start", job_id, (JobStatus.QUEUED,),
                             EventType.STARTED, actor, {"now": now})
        if job is None and retry:
            job = _transition_pg(session, "start", job_id, (JobStatus.RUNNING,),
                                 EventType.RETRIED, actor, {"now": now})
        return job
    values = _values("start", {"now": now})
    event = EventType.STARTED
    job = _transition(session, job_id, (JobStatus.QUEUED,), **values)
    if job is None and retry:
        job = _transition(session, job_id, (JobStatus.RUNNING,), **values)
        event = EventType.RETRIED
    if job is None:
        return None
    record_event(session, job.id, job.project_id, event, actor, at=now,
                 attempts=job.attempts, wait_ms=_ms(job.created_at, now))
    session.flush()
    return job


def _check_scores(scores: dict[str, Any] | None) -> dict[str, int] | None:
    # score_info is the only part of a result stored in clear: integers, nothing else.
    if scores is None:
        return None
    for key, value in scores.items():
        if not _SCORE_KEY.fullmatch(key) or type(value) is not int:
            raise ValueError(f"scores must map '<alert>_score' to an int, got {key!r}")
    return dict(scores)


def succeed_job(
    session: Session, job_id: str, result_body: dict[str, Any],
    scores: dict[str, int] | None, actor: str, *, now: datetime | None = None,
) -> bool:
    """running → succeeded: stores the encrypted response body, deletes the input."""
    now = now or utcnow()
    params = {"now": now, "result_enc": crypto.encrypt_json(result_body),
              "scores": _check_scores(scores), "expires_at": now + _retention()}
    if _on_postgresql(session):
        return _transition_pg(session, "succeed", job_id, (JobStatus.RUNNING,),
                              EventType.SUCCEEDED, actor, params) is not None
    done = _transition(session, job_id, (JobStatus.RUNNING,), **_values("succeed", params))
    if done is None:
        return False
    _end_events(session, done, EventType.SUCCEEDED, actor, now, attempts=done.attempts,
                duration_ms=_ms(done.started_at, now))
    return True


def fail_job(
    session: Session, job_id: str, code: ErrorCode | str, msg: str, actor: str, *,
    now: datetime | None = None,
) -> bool:
    """queued | running → failed with an error code and a caller-safe message.

    ``msg`` is shown to the caller and stored in clear: it must hold no personal data
    (``ServiceError`` messages never do).
    """
    now = now or utcnow()
    code = ErrorCode(code)
    params = {"now": now, "code": code.value, "msg": msg[:500],
              "expires_at": now + _retention()}
    from_ = (JobStatus.QUEUED, JobStatus.RUNNING)
    if _on_postgresql(session):
        return _transition_pg(session, "fail", job_id, from_, EventType.FAILED, actor,
                              params) is not None
    done = _transition(session, job_id, from_, **_values("fail", params))
    if done is None:
        return False
    _end_events(session, done, EventType.FAILED, actor, now, code=code.value,
                attempts=done.attempts, duration_ms=_ms(done.started_at, now))
    return True


def cancel_job(
    session: Session, project_id: str, job_id: str, actor: str, *,
    now: datetime | None = None,
) -> Job:
    """queued → cancelled. Cancelling a cancelled job again is a no-op; any other state
    is ``IDC.0410``; another project's job is ``IDC.0404``."""
    job = get_job(session, project_id, job_id)
    if job.status == JobStatus.CANCELLED.value:
        return job
    now = now or utcnow()
    done = _transition(
        session, job_id, (JobStatus.QUEUED,),
        status=JobStatus.CANCELLED.value, finished_at=now, url_enc=None,
        expires_at=now + _retention(),
    )
    if done is None:
        job = _reload(session, job_id)
        raise ServiceError(ErrorCode.JOB_NOT_CANCELLABLE,
                           f"job cannot be cancelled: it is {job.status}")
    _end_events(session, done, EventType.CANCELLED, actor, now)
    return _reload(session, job_id)


# --- reads ----------------------------------------------------------------------------


def get_job(session: Session, project_id: str, job_id: str) -> Job:
    """The job, or ``IDC.0404`` for a malformed id, an unknown one or another project's
    (the answer never reveals that the job exists elsewhere)."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise _not_found()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.project_id != project_id:
        raise _not_found()
    return job


def read_result(
    session: Session, project_id: str, job_id: str, actor: str, *, purpose: str = "api",
) -> dict[str, Any] | None:
    """The decrypted response body of a succeeded job, or None (not succeeded, or purged
    after retention). Each read that returns a body is audited."""
    job = get_job(session, project_id, job_id)
    return result_of(session, job, actor, purpose=purpose)


def result_of(
    session: Session, job: Job, actor: str, *, purpose: str = "api",
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """``read_result`` for a job already loaded and authorised (batch results, webhooks)."""
    if job.result_enc is None:
        return None
    body = crypto.decrypt_json(job.result_enc)
    record_event(session, job.id, job.project_id, EventType.RESULT_READ, actor, at=now,
                 purpose=purpose)
    session.flush()
    return body


@functools.cache
def _pg_read_statement() -> Any:
    """The job's columns, and a ``result_read`` event if it has a result: one statement."""
    job = (select(Job).where(Job.id == bindparam("job_id"),
                             Job.project_id == bindparam("project_id")).cte("job"))
    read = insert(JobEvent).from_select(
        ["job_id", "project_id", "at", "actor", "event", "detail"],
        select(job.c.id, job.c.project_id, _NOW, bindparam("actor", type_=String),
               literal(EventType.RESULT_READ.value),
               _json_detail({"purpose": bindparam("purpose", type_=String)}))
        .where(job.c.result_enc.is_not(None)),
    ).cte("read")
    return select(*job.c).add_cte(read)


def read_job(
    session: Session, project_id: str, job_id: str, actor: str, *, purpose: str = "api",
    now: datetime | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """``get_job`` and ``result_of`` together: the job (its columns) and its decrypted
    body, or None (not succeeded, or purged); a read that returns a body is audited.

    On PostgreSQL one statement, so that in autocommit mode the read and its audit
    event cost one round trip (the synchronous route's answer, whose commit is the one
    that waits for the disk); elsewhere ``get_job`` then ``result_of``.
    """
    if not _on_postgresql(session):
        job = get_job(session, project_id, job_id)
        return job, result_of(session, job, actor, purpose=purpose, now=now)
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise _not_found()
    params = {"job_id": job_id, "project_id": project_id, "now": now or utcnow(),
              "actor": checked_actor(actor), **checked_detail(purpose=purpose)}
    row = session.execute(_pg_read_statement(), params).one_or_none()
    if row is None:
        raise _not_found()
    return row, crypto.decrypt_json(row.result_enc) if row.result_enc is not None else None


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, job_id = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not _JOB_ID.fullmatch(job_id):
            raise ValueError
        return when, job_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _invalid("invalid cursor") from None


def list_jobs(
    session: Session,
    project_id: str,
    status: JobStatus | str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the project's jobs, newest first, and the cursor of the next page (None
    on the last). ``created_after`` is inclusive, ``created_before`` exclusive."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise _invalid(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    query = select(Job).options(*LIGHT).where(Job.project_id == project_id)
    if status is not None:
        try:
            query = query.where(Job.status == JobStatus(status).value)
        except ValueError:
            raise _invalid("unknown status") from None
    for name, bound in (("created_after", created_after), ("created_before", created_before)):
        if bound is not None and bound.tzinfo is None:
            raise _invalid(f"{name} must carry a time zone")
    if created_after is not None:
        query = query.where(Job.created_at >= created_after)
    if created_before is not None:
        query = query.where(Job.created_at < created_before)
    if cursor:
        at, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < at, and_(Job.created_at == at, Job.id < job_id))
        )
    rows = list(session.scalars(
        query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    ))
    page = rows[:limit]
    return page, (_encode_cursor(page[-1]) if len(rows) > limit else None)


def job_events(session: Session, project_id: str, job_id: str) -> list[JobEvent]:
    """The audit trail of one job, oldest first (``IDC.0404`` for another project)."""
    get_job(session, project_id, job_id)
    return list(session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    ))


def load_input(session: Session, job_id: str) -> bytes | str:
    """The decrypted image bytes, or the URL, of a job (for the worker).

    ``IDC.0404`` once the input is gone (the job ended or was purged).
    """
    row = session.get(JobInput, job_id)
    if row is not None:
        return crypto.decrypt(row.data_enc)
    url_enc = session.scalar(select(Job.url_enc).where(Job.id == job_id))
    if url_enc is not None:
        return crypto.decrypt_text(url_enc)
    raise ServiceError(ErrorCode.JOB_NOT_FOUND, "job input not found")


def keep_input(session: Session, job_id: str, data_enc: bytes) -> bool:
    """Move a photo stashed in Redis into ``job_inputs`` while its job has not ended (a
    synchronous call timed out and the job goes on). False when the job has ended or
    its photo is not stashed. The conditional UPDATE locks the job's row, so an ending
    transition either comes first (nothing is kept) or deletes the kept row."""
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.input_store == STORE_REDIS,
               Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(input_store=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        return False
    session.add(JobInput(job_id=job_id, data_enc=data_enc))
    session.flush()
    return True


def status_counts(session: Session, *conditions: Any) -> dict[str, int]:
    """Jobs per status (all statuses present) under the given WHERE conditions."""
    counts = {s.value: 0 for s in JobStatus}
    for status, n in session.execute(
        select(Job.status, func.count()).where(*conditions).group_by(Job.status)
    ):
        counts[status] = n
    return counts


# --- housekeeping ---------------------------------------------------------------------


def purge_expired(
    session: Session, now: datetime | None = None, *, actor: str = "system:retention",
    limit: int | None = None,
) -> int:
    """Retention: delete the result, input and URL of every job past ``expires_at``.

    The job row and its audit trail stay (they hold no personal data). Returns the
    number of jobs purged; safe to run concurrently and repeatedly.
    """
    now = now or utcnow()
    query = select(Job.id, Job.project_id).where(
        Job.expires_at <= now, Job.purged_at.is_(None)
    ).order_by(Job.expires_at)
    purged = 0
    for job_id, project_id in session.execute(query.limit(limit)).all():
        if not session.execute(
            update(Job).where(Job.id == job_id, Job.purged_at.is_(None))
            .values(result_enc=None, url_enc=None, purged_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount:
            continue  # another purger got there first
        session.execute(delete(JobInput).where(JobInput.job_id == job_id)
                        .execution_options(synchronize_session=False))
        record_event(session, job_id, project_id, EventType.RESULT_PURGED, actor, at=now)
        purged += 1
    session.flush()
    return purged


def stuck_jobs(
    session: Session, now: datetime | None = None,
    deadline: timedelta | float | None = None, *, limit: int = 1000,
) -> list[Job]:
    """Jobs queued, or running, for longer than ``deadline`` (default
    IDCARD_JOB_DEADLINE_SECONDS): lost messages or dead workers, for a reconciler to
    re-enqueue (``start_job(retry=True)``) or fail."""
    now = now or utcnow()
    if deadline is None:
        deadline = get_settings().job_deadline_seconds
    if not isinstance(deadline, timedelta):
        deadline = timedelta(seconds=deadline)
    cutoff = now - deadline
    return list(session.scalars(
        select(Job).options(*LIGHT).where(or_(
            and_(Job.status == JobStatus.QUEUED.value, Job.created_at < cutoff),
            and_(Job.status == JobStatus.RUNNING.value, Job.started_at < cutoff),
        )).order_by(Job.created_at).limit(limit)
    ))
