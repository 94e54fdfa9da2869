"""Where a job's photo waits: ``jobs.input_store``.

NULL (every existing row, every asynchronous job): in ``job_inputs``. 'redis': the photo
of a synchronous call waits in Redis for the few seconds until its worker reads it
(``idcard.inputs``). One nullable column: no table rebuild on SQLite, nothing to fill.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("input_store", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "input_store")
