"""Webhook delivery: one signed POST per call, every attempt recorded in SQL.

``deliver`` makes one attempt and says whether (and when) to try again; the Celery task
turns that into ``self.retry(countdown=...)``, the embedded mode into a sleeping thread
(``deliver_until_done``). The attempt number comes from the database, so a retry chain
survives worker restarts and two chains for one event cannot both record attempt n.
Callback URLs follow the fetcher's SSRF rules (IDCARD_URL_ALLOW_HOSTS included).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idcard.db import session_scope
from idcard.errors import ErrorCode, ServiceError
from idcard.models import Job, Project, WebhookDelivery, WebhookState
from idcard.projects import webhook_secrets
from idcard.settings import Settings, get_settings
from idcard.webhooks import (
    SIGNATURE_HEADER,
    backoff,
    build_event,
    encode_body,
    record_attempt,
    sign,
)
from worker.fetcher import new_client, pin_url
from worker.jobrunner import worker_actor

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-IDCard-Event-Id"


@dataclass(frozen=True)
class DeliveryOutcome:
    """``state``: delivered | pending | failed (from the recorded attempt), or skipped
    (nothing to send: already delivered or given up, stale event, a concurrent duplicate).
    ``retry_in``: seconds until the next attempt is due, when one is."""

    state: str
    attempt: int | None = None
    status_code: int | None = None
    retry_in: float | None = None


SKIPPED = DeliveryOutcome("skipped")


@dataclass(frozen=True)
class _Prepared:
    url: str
    body: bytes
    secrets: tuple[str, ...]  # current first; the previous one during its grace period
    attempt: int


def _prepare(job_id: str, event_id: str, actor: str, max_attempts: int) -> _Prepared | None:
    with session_scope() as session:
        state = session.scalar(select(Job.webhook_state).where(Job.id == job_id))
        if state != WebhookState.PENDING.value:
            return None
        done = session.scalar(select(func.max(WebhookDelivery.attempt))
                              .where(WebhookDelivery.event_id == event_id)) or 0
        if done >= max_attempts:
            return None
        built = build_event(session, job_id, actor)  # audits the read of the result
        if built is None or built[1] != event_id:
            return None  # the job ended differently from what this event announces
        url, _, body = built
        project_id = body["project_id"]
        project = session.get(Project, project_id)
        if project is None:
            return None
        return _Prepared(url, encode_body(body), webhook_secrets(project), done + 1)


def _post(prepared: _Prepared, event_id: str, settings: Settings) -> tuple[int | None,
                                                                           str | None]:
    """(HTTP status, None) or (None, a short reason). Never raises for network trouble."""
    try:
        target = pin_url(prepared.url, settings)
    except ServiceError as exc:
        return None, "refused" if exc.code is ErrorCode.URL_REFUSED else "host not found"
    headers = {
        **target.headers,
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(prepared.secrets, prepared.body),
        EVENT_ID_HEADER: event_id,
    }
    try:
        with new_client(settings, timeout=settings.webhook_timeout_seconds) as client:
            # Streamed and closed unread: what a receiver answers beyond its status is not
            # our business, and a huge or endless body must not keep us.
            with client.stream("POST", target.connect_url, content=prepared.body,
                               headers=headers, extensions=target.extensions) as response:
                return response.status_code, None
    except httpx.TimeoutException:
        return None, "timeout"
    except httpx.HTTPError:
        return None, "connect error"


def deliver(
    job_id: str, event_id: str, *, actor: str | None = None,
    settings: Settings | None = None,
) -> DeliveryOutcome:
    """Make the next delivery attempt of webhook ``event_id`` for job ``job_id``.

    POSTs the signed body with a short timeout (IDCARD_WEBHOOK_TIMEOUT_SECONDS), records
    the attempt (``idcard.webhooks.record_attempt``) and returns the outcome; ``retry_in``
    follows the exponential backoff until IDCARD_WEBHOOK_MAX_ATTEMPTS, after which the
    webhook is marked failed. Database errors propagate (the caller retries).
    """
    settings = settings or get_settings()
    actor = actor or worker_actor()
    prepared = _prepare(job_id, event_id, actor, settings.webhook_max_attempts)
    if prepared is None:
        return SKIPPED
    t0 = time.monotonic()
    status_code, error = _post(prepared, event_id, settings)
    ms = int((time.monotonic() - t0) * 1000)
    try:
        with session_scope() as session:
            row = record_attempt(session, job_id, event_id, prepared.attempt,
                                 status_code=status_code, error=error, actor=actor)
            state = row.state
    except IntegrityError:
        # Another chain recorded this attempt number first (a duplicated message): let
        # that chain carry on alone.
        log.info("job %s: webhook attempt %d already recorded, chain dropped", job_id,
                 prepared.attempt)
        return SKIPPED
    log.info("job %s: webhook attempt %d -> %s (%s, %d ms)", job_id, prepared.attempt,
             state, status_code if status_code is not None else error, ms)
    retry_in = (backoff(prepared.attempt).total_seconds()
                if state == WebhookState.PENDING.value else None)
    return DeliveryOutcome(state, prepared.attempt, status_code, retry_in)


def deliver_until_done(
    job_id: str, event_id: str, *, actor: str | None = None,
    stop: threading.Event | None = None,
) -> DeliveryOutcome:
    """Attempt after attempt, sleeping the backoff in between, until delivered or given
    up (or ``stop`` is set). For the embedded mode, from a thread of its own: a slow or
    down receiver must not hold up recognition."""
    stop = stop or threading.Event()
    while True:
        outcome = deliver(job_id, event_id, actor=actor)
        if outcome.retry_in is None or stop.wait(outcome.retry_in):
            return outcome
