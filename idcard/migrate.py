"""Apply the Alembic migrations from Python (``idcard-ocr migrate``, tests, embedded mode).

``alembic.ini`` and ``migrations/`` live at the top of the repository, beside this
package, and are found from ``idcard/__file__``, so this works from any working
directory. That assumes the service runs from a checkout (``pip install -e .`` or a
container that copies the repository); a plain wheel does not carry migrations/.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from idcard.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS = ROOT / "migrations"


def alembic_config(url: str | None = None) -> Config:
    if not (MIGRATIONS / "env.py").is_file():
        raise RuntimeError(
            f"migrations not found at {MIGRATIONS}: run from a checkout of the repository"
        )
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url or get_settings().database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (default IDCARD_DATABASE_URL) to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from idcard.db import create_db_engine

    engine = create_db_engine(url or get_settings().database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
