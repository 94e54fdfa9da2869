"""Credential rotation: a project's previous AK/SK pair and webhook secret, each valid
until a grace deadline (the previous token has had its columns since 0001).

Only nullable columns and one unique index are added, so existing projects keep working
unchanged (no previous credential) and SQLite needs no table rebuild: ADD COLUMN and
CREATE UNIQUE INDEX are plain statements there, and DROP COLUMN too since SQLite 3.35.
Runs on SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("previous_access_key", sa.String(length=32)),
    ("previous_secret_key_enc", sa.LargeBinary()),
    ("previous_access_key_expires_at", sa.DateTime(timezone=True)),
    ("previous_webhook_secret_enc", sa.LargeBinary()),
    ("previous_webhook_secret_expires_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("projects", sa.Column(name, type_, nullable=True))
    op.create_index(op.f("ix_projects_previous_access_key"), "projects",
                    ["previous_access_key"], unique=True)


def downgrade() -> None:
    # Previous credentials in their grace period stop working: only the current ones
    # survive a downgrade.
    op.drop_index(op.f("ix_projects_previous_access_key"), table_name="projects")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("projects", name)
