"""Webhooks: the event body, its signature, and the record of every delivery attempt.

Sending is the worker's job; this module holds what the worker, the API (attempt
history) and receivers' tests share. Contract section 3: body
``{"event", "event_id", "job_id", "project_id", "status", "result" | "error_code",
"error_msg"}``, header ``X-IDCard-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>``. While a rotated webhook secret is in its grace period the header
carries one ``v1`` per secret, the current one first (``t=<t>,v1=<new>,v1=<old>``, the
Stripe convention): a receiver accepts the event if any ``v1`` matches its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idcard.audit import record_event
from idcard.errors import ErrorCode, ServiceError
from idcard.jobs import result_of
from idcard.models import EventType, Job, JobStatus, WebhookDelivery, WebhookState, utcnow
from idcard.settings import get_settings

SIGNATURE_HEADER = "X-IDCard-Signature"
_EVENT_NAMESPACE = uuid.UUID("6f1d9a52-3c1e-4d47-9a0e-2b8f7f0c5e11")


def event_id_for(job_id: str, event: str) -> str:
    """Stable per (job, event): every retry of one event carries the same id."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{job_id}:{event}").hex


def build_event(
    session: Session, job_id: str, actor: str,
) -> tuple[str, str, dict[str, Any]] | None:
    """``(callback_url, event_id, body)`` for an ended job with a callback, else None.

    Reading the result for the body is audited (purpose 'webhook').
    """
    job = session.get(Job, job_id)
    if job is None or not job.callback_url:
        return None
    if job.status not in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value):
        return None
    event = f"job.{job.status}"
    body: dict[str, Any] = {
        "event": event,
        "event_id": event_id_for(job.id, event),
        "job_id": job.id,
        "project_id": job.project_id,
        "status": job.status,
    }
    if job.status == JobStatus.SUCCEEDED.value:
        body["result"] = result_of(session, job, actor, purpose="webhook")
    else:
        body["error_code"] = job.error_code
        body["error_msg"] = job.error_msg
    return job.callback_url, body["event_id"], body


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _mac(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body,
                    hashlib.sha256).hexdigest()


def sign(secret: str | Sequence[str], body: bytes, timestamp: int | None = None) -> str:
    """The ``X-IDCard-Signature`` header value for ``body``: ``t=<t>,v1=<hex>`` with one
    ``v1`` per secret, in the order given (current first)."""
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets:
        raise ValueError("no webhook secret to sign with")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={_mac(s, body, t)}" for s in secrets)])


def verify(secret: str, body: bytes, header: str, *, tolerance: int = 300,
           now: int | None = None) -> bool:
    """What a receiver does: ``t`` appears once and is recent, and any ``v1`` is the
    HMAC of ``"<t>.<body>"`` under its secret (other schemes are ignored)."""
    t_values, signatures = [], []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            t_values.append(value)
        elif name == "v1":
            signatures.append(value)
    try:
        (t,) = (int(v) for v in t_values)
    except ValueError:
        return False
    if abs((int(time.time()) if now is None else now) - t) > tolerance:
        return False
    expected = _mac(secret, body, t).encode()
    # Every candidate is compared, so timing says nothing about which one matched.
    matches = [hmac.compare_digest(expected, v.encode()) for v in signatures if v.isascii()]
    return any(matches)


def backoff(attempt: int) -> timedelta:
    """Delay before attempt ``attempt + 1``: base * 2^(attempt - 1)."""
    base = get_settings().webhook_backoff_base_seconds
    return timedelta(seconds=base * 2 ** (attempt - 1))


def record_attempt(
    session: Session,
    job_id: str,
    event_id: str,
    attempt: int,
    *,
    status_code: int | None,
    error: str | None,
    actor: str,
    now: datetime | None = None,
) -> WebhookDelivery:
    """Record one delivery attempt and move the job's webhook state.

    2xx is delivered; otherwise the attempt is 'pending' with ``next_attempt_at`` while
    attempts remain (IDCARD_WEBHOOK_MAX_ATTEMPTS), else 'failed'. ``error`` is a short
    reason such as 'timeout' or 'connect error', never a body or a URL.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise ServiceError(ErrorCode.JOB_NOT_FOUND, "job not found")
    now = now or utcnow()
    ok = status_code is not None and 200 <= status_code < 300
    last = attempt >= get_settings().webhook_max_attempts
    state = (WebhookState.DELIVERED if ok else
             WebhookState.FAILED if last else WebhookState.PENDING)
    next_at = now + backoff(attempt) if state is WebhookState.PENDING else None
    row = WebhookDelivery(
        job_id=job.id, project_id=job.project_id, event_id=event_id, attempt=attempt,
        at=now, status_code=status_code, error=error[:200] if error else None,
        state=state.value, next_attempt_at=next_at,
    )
    session.add(row)
    record_event(session, job.id, job.project_id, EventType.WEBHOOK_ATTEMPT, actor, at=now,
                 attempt=attempt, status_code=status_code, event_id=event_id,
                 next_attempt_at=next_at)
    # Never move a delivered webhook back (a late duplicate attempt may fail).
    session.execute(
        update(Job).where(Job.id == job.id,
                          Job.webhook_state.is_distinct_from(WebhookState.DELIVERED.value))
        .values(webhook_state=state.value)
        .execution_options(synchronize_session=False)
    )
    if state is not WebhookState.PENDING:
        final = (EventType.WEBHOOK_DELIVERED if ok else EventType.WEBHOOK_FAILED)
        record_event(session, job.id, job.project_id, final, actor, at=now,
                     attempt=attempt, event_id=event_id)
    session.flush()
    return row


def deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    """Every attempt for a job, oldest first."""
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.id)
    ))
