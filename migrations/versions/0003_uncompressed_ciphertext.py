"""Store encrypted columns out of line without compression (PostgreSQL).

Ciphertext does not compress, yet PostgreSQL's default ('extended') storage tries pglz
on every value over 2 kB before moving it out of line: for a 200 kB photo that attempt
costs more than the rest of the insert. 'external' keeps the out-of-line storage and
skips the attempt. Applies to rows written from now on; SQLite has no such setting.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns that can be large: the photo, and a result with images in it.
_COLUMNS = (("job_inputs", "data_enc"), ("jobs", "result_enc"))


def _set_storage(mode: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {mode}")


def upgrade() -> None:
    _set_storage("EXTERNAL")


def downgrade() -> None:
    _set_storage("EXTENDED")
