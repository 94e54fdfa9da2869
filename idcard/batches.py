"""Batches: many jobs submitted in one call, counted by status, read back together."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idcard.errors import ErrorCode, ServiceError
from idcard.jobs import LIGHT, create_job, result_of, status_counts
from idcard.models import Batch, Job, Priority, utcnow
from idcard.options import RecognitionOptions
from idcard.settings import get_settings


@dataclass(frozen=True)
class BatchItem:
    """One item: ``image`` xor ``url``; ``options`` overrides the batch's."""

    image: bytes | None = None
    url: str | None = None
    options: RecognitionOptions | None = None
    client_reference: str | None = None


def create_batch(
    session: Session,
    project_id: str,
    items: Sequence[BatchItem],
    options: RecognitionOptions,
    *,
    priority: Priority | str = Priority.BULK,
    callback_url: str | None = None,
    client_reference: str | None = None,
    actor: str,
    now: datetime | None = None,
) -> tuple[Batch, list[Job]]:
    """A batch and one queued job per item, in one transaction (all or nothing).

    Each job gets the batch's ``callback_url``, so a webhook fires per job.
    """
    limit = get_settings().batch_max_items
    if not 1 <= len(items) <= limit:
        raise ServiceError(ErrorCode.INVALID_PARAMETER,
                           f"a batch holds between 1 and {limit} items")
    try:
        priority = Priority(priority)
    except ValueError:
        raise ServiceError(ErrorCode.INVALID_PARAMETER,
                           "priority must be interactive or bulk") from None
    now = now or utcnow()
    batch = Batch(
        id=uuid.uuid4().hex, project_id=project_id, created_at=now, total=len(items),
        priority=priority.value, options=options.to_dict(), callback_url=callback_url,
        client_reference=client_reference,
    )
    session.add(batch)
    session.flush()
    jobs = []
    for index, item in enumerate(items):
        job, _ = create_job(
            session, project_id, item.options or options, image=item.image, url=item.url,
            priority=priority, callback_url=callback_url,
            client_reference=item.client_reference, actor=actor, batch_id=batch.id,
            now=now,
        )
        job.batch_index = index
        jobs.append(job)
    session.flush()
    return batch, jobs


def get_batch(session: Session, project_id: str, batch_id: str) -> Batch:
    """The batch, or ``IDC.0404`` (also for another project's batch)."""
    batch = session.get(Batch, batch_id) if isinstance(batch_id, str) else None
    if batch is None or batch.project_id != project_id:
        raise ServiceError(ErrorCode.JOB_NOT_FOUND, "batch not found")
    return batch


def batch_counts(session: Session, project_id: str, batch_id: str) -> dict[str, int]:
    """``{"total": n, "queued": n, "running": n, "succeeded": n, ...}``."""
    batch = get_batch(session, project_id, batch_id)
    return {"total": batch.total, **status_counts(session, Job.batch_id == batch.id)}


def batch_jobs(session: Session, project_id: str, batch_id: str) -> list[Job]:
    """The batch's jobs in submission order."""
    get_batch(session, project_id, batch_id)
    return list(session.scalars(
        select(Job).options(*LIGHT).where(Job.batch_id == batch_id).order_by(Job.batch_index)
    ))


def batch_results(
    session: Session, project_id: str, batch_id: str, actor: str,
) -> Iterator[tuple[Job, dict[str, Any] | None]]:
    """``(job, response body or None)`` per job, each read audited (purpose 'batch')."""
    for job in batch_jobs(session, project_id, batch_id):
        yield job, result_of(session, job, actor, purpose="batch")
