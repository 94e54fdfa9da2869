"""The database schema, declared once: Alembic's ``migrations/env.py`` reads this metadata.

Columns ending in ``_enc`` hold ciphertext (AES-256-GCM, ``idcard.crypto``): everything that may
identify a person (image, URL, recognised fields) lives only there. The other columns,
``job_events.detail`` included, never hold personal data.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Priority(str, Enum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class InputKind(str, Enum):
    IMAGE = "image"
    URL = "url"


class WebhookState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class EventType(str, Enum):
    CREATED = "created"
    ENQUEUED = "enqueued"
    STARTED = "started"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RESULT_READ = "result_read"
    WEBHOOK_ATTEMPT = "webhook_attempt"
    WEBHOOK_DELIVERED = "webhook_delivered"
    WEBHOOK_FAILED = "webhook_failed"
    INPUT_DELETED = "input_deleted"
    RESULT_PURGED = "result_purged"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL (timestamptz) and SQLite (text).

    SQLite keeps no zone, so values are stored as naive UTC and given back their zone
    on the way out; a naive value on the way in is a bug and is refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC (idcard.models.utcnow)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _one_of(column: str, enum: type[Enum]) -> str:
    return f"{column} IN ({', '.join(repr(m.value) for m in enum)})"


# Named constraints, so that SQLite's batch migrations can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON(none_as_null=True)
# SQLite only autoincrements a column declared exactly INTEGER.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: Json}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token replaced by the last rotation stays valid until this time.
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_token_expires_at: Mapped[datetime | None]
    access_key: Mapped[str] = mapped_column(String(32), unique=True)
    secret_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    webhook_secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    rate_limit_per_minute: Mapped[int | None]
    # The AK/SK pair and the webhook secret replaced by the last rotation, valid until
    # their time (``idcard.projects``). A unique index, not a constraint: SQLite adds
    # it without rebuilding the table.
    previous_access_key: Mapped[str | None] = mapped_column(String(32), unique=True,
                                                             index=True)
    previous_secret_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_access_key_expires_at: Mapped[datetime | None]
    previous_webhook_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_webhook_secret_expires_at: Mapped[datetime | None]


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_one_of("priority", Priority), name="priority"),
        Index(None, "project_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[datetime]
    total: Mapped[int]
    priority: Mapped[str] = mapped_column(String(16))
    options: Mapped[dict[str, Any]]
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    client_reference: Mapped[str | None] = mapped_column(String(128))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        CheckConstraint(_one_of("status", JobStatus), name="status"),
        CheckConstraint(_one_of("priority", Priority), name="priority"),
        CheckConstraint(_one_of("input_kind", InputKind), name="input_kind"),
        CheckConstraint(
            f"webhook_state IS NULL OR {_one_of('webhook_state', WebhookState)}",
            name="webhook_state",
        ),
        # Listing a project's jobs newest first, with the keyset cursor.
        Index(None, "project_id", "created_at", "id"),
        # The reconciler's scan for stuck jobs.
        Index(None, "status", "created_at"),
        Index(None, "batch_id", "batch_index"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    # Position in the batch: the batch's results come back in submission order.
    batch_index: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    options: Mapped[dict[str, Any]]  # side and flags only
    input_kind: Mapped[str] = mapped_column(String(8))
    # Where an image input waits: NULL in job_inputs, 'redis' in Redis (idcard.inputs).
    input_store: Mapped[str | None] = mapped_column(String(8))
    url_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    client_reference: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    result_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    scores: Mapped[dict[str, Any] | None]  # score_info only
    error_code: Mapped[str | None] = mapped_column(String(16))
    error_msg: Mapped[str | None] = mapped_column(String(500))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    purged_at: Mapped[datetime | None]
    webhook_state: Mapped[str | None] = mapped_column(String(16))


class JobInput(Base):
    """The image of a job, by reference: the Celery message carries only the job id."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    data_enc: Mapped[bytes] = mapped_column(LargeBinary)


class JobEvent(Base):
    """The audit trail: who did what to which job, and when. No personal data."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    # No CHECK here: autogenerate cannot see a changed CHECK, and new event types should
    # not need a migration. ``idcard.audit.record_event`` accepts only EventType values.
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookDelivery(Base):
    """One row per delivery attempt; ``event_id`` is the same for every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "attempt"),
        CheckConstraint(_one_of("state", WebhookState), name="state"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int]
    at: Mapped[datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime | None]
