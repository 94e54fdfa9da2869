"""Audit events: who did what to which job, and when.

The detail of an event is checked against an allow-list of keys and short plain
values, so that personal data (names, numbers, addresses, images, URLs, messages)
cannot slip into the audit trail by accident.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from idcard.models import EventType, JobEvent, utcnow

DETAIL_KEYS = frozenset({
    "attempt",       # webhook attempt number
    "attempts",      # job attempts so far
    "batch_id",
    "code",          # an ErrorCode value
    "duration_ms",   # running time of an attempt
    "event_id",      # webhook event id
    "input_kind",    # image | url
    "next_attempt_at",
    "priority",
    "purpose",       # why a result was read: api | webhook | batch
    "queue",
    "reason",        # a short machine word, e.g. stuck, duplicate
    "state",
    "status",
    "status_code",   # webhook HTTP status
    "wait_ms",       # time spent queued
})
_PLAIN = re.compile(r"[A-Za-z0-9_.:+\- ]{0,64}")
_ACTOR = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


def _check_detail(detail: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in detail.items():
        if value is None:
            continue  # absent, rather than a key full of nulls
        if key not in DETAIL_KEYS:
            raise ValueError(f"audit detail key {key!r} is not allowed")
        if isinstance(value, datetime):
            value = value.isoformat()
        if isinstance(value, str) and not _PLAIN.fullmatch(value):
            raise ValueError(f"audit detail {key!r} must be a short plain string")
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"audit detail {key!r} must be a scalar")
        clean[key] = value.value if isinstance(value, EventType) else value
    return clean


def checked_detail(**detail: Any) -> dict[str, Any]:
    """``detail`` as ``record_event`` would store it (allowed keys, short plain values),
    else ValueError."""
    return _check_detail(detail)


def checked_actor(actor: str) -> str:
    """``actor`` if it is a short identifier such as ``api:token``, else ValueError."""
    if not _ACTOR.fullmatch(actor):
        raise ValueError("actor must be a short identifier such as 'api:token'")
    return actor


def record_event(
    session: Session,
    job_id: str,
    project_id: str,
    event: EventType,
    actor: str,
    at: datetime | None = None,
    **detail: Any,
) -> JobEvent:
    """Add one audit event to the session's transaction (flushed with it)."""
    row = JobEvent(
        job_id=job_id,
        project_id=project_id,
        at=at or utcnow(),
        actor=checked_actor(actor),
        event=EventType(event).value,
        detail=_check_detail(detail),
    )
    session.add(row)
    return row
