"""Alembic environment: the metadata of ``idcard.models``, the URL from the settings.

``idcard.migrate.upgrade(url)`` passes its URL in ``config.attributes``; the ``alembic``
command line falls back to IDCARD_DATABASE_URL. alembic.ini's sqlalchemy.url is unused.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context

from idcard.db import create_db_engine
from idcard.models import Base, UTCDateTime
from idcard.settings import get_settings

config = context.config
# Only the alembic command line configures logging; a programmatic upgrade inside the
# service must not replace the service's own logging.
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import application types: UTCDateTime is a plain
    # timestamptz in the database.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = _url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_db_engine(_url())
    try:
        with engine.connect() as connection:
            # SQLite cannot ALTER most things: batch mode copies the table instead.
            _configure(connection=connection,
                       render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
