"""Fixtures for the data layer against real databases.

Every database test runs twice, on SQLite (a temporary file) and on PostgreSQL (a
throwaway ``idcard_test_<random>`` database, dropped at the end). Both are created by
running the Alembic migrations, so the migrations are tested too.

PostgreSQL is found at IDCARD_TEST_POSTGRES_URL, else at 127.0.0.1:5432 as ``postgres``
or ``root``. When it is unreachable the PostgreSQL half is skipped, except under CI
(``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from idcard.db import dispose_engines, new_session, normalize_url, session_scope
from idcard.migrate import upgrade
from idcard.models import Base
from idcard.settings import Settings, get_settings

TEST_SECRET_KEY = "integration-test-secret-key-0123456789"
_PG_DEFAULTS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _reachable_admin_url() -> tuple[str | None, str]:
    candidates = [os.environ["IDCARD_TEST_POSTGRES_URL"]] if os.environ.get(
        "IDCARD_TEST_POSTGRES_URL") else list(_PG_DEFAULTS)
    errors = []
    for url in candidates:
        engine = create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url, ""
        except Exception as exc:  # any failure means: not usable here
            errors.append(f"{make_url(url).render_as_string()}: {type(exc).__name__}")
        finally:
            engine.dispose()
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url, why = _reachable_admin_url()
    if url is None:
        reason = f"PostgreSQL unreachable ({why})"
        if in_ci():
            pytest.fail(f"{reason}; CI requires it", pytrace=False)
        pytest.skip(f"{reason}; set IDCARD_TEST_POSTGRES_URL to run these tests")
    return url


@contextmanager
def throwaway_postgres(admin_url: str) -> Iterator[str]:
    """A new empty database for the duration of the block; its URL."""
    name = f"idcard_test_{secrets.token_hex(6)}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgresql_url(postgres_admin_url: str) -> Iterator[str]:
    with throwaway_postgres(postgres_admin_url) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'idcard.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def use_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Set IDCARD_* variables and reload the cached settings."""
    for key, value in env.items():
        monkeypatch.setenv(f"IDCARD_{key.upper()}", value)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Settings]:
    """Settings pointing at the test database, with a test secret key."""
    monkeypatch.delenv("IDCARD_EMBEDDED", raising=False)
    yield use_settings(monkeypatch, database_url=database_url, secret_key=TEST_SECRET_KEY)
    get_settings.cache_clear()


@pytest.fixture
def clean_db(settings: Settings) -> Settings:
    """Empty tables (the schema stays, migrated once per session)."""
    with session_scope() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())
    return settings


@pytest.fixture
def session(clean_db: Settings) -> Iterator[Session]:
    """A session on an empty database; tests commit when they want others to see."""
    s = new_session()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # monkeypatch restores the environment after a test; the cached settings must follow.
    yield
    get_settings.cache_clear()


# The live-API fixtures (a server per test module), for every module that asks for them.
from .api_support import (  # noqa: E402, F401
    api,
    api_database,
    card,
    dispatcher,
    fresh,
    other,
    projects,
    server,
)
