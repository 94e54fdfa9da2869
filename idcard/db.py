"""Engines and sessions, configured from the settings.

The state-machine functions (``idcard.jobs``) only flush; the caller owns the
transaction, normally through ``session_scope()``, which commits on success.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from idcard.models import Base
from idcard.settings import get_settings

metadata = Base.metadata

# Unbound: the engine is chosen per call (settings may change in tests). expire_on_commit
# is off so that a job returned from a committed scope can still be serialised.
SessionLocal = sessionmaker(autoflush=True, expire_on_commit=False)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control away from pysqlite (which would begin a transaction only
    # at the first write and so break SAVEPOINTs); ``_sqlite_begin`` emits BEGIN instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        # WAL lets the API read while a worker writes; SQLite leaves foreign keys off
        # unless asked, per connection.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
    finally:
        cur.close()


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front: a transaction that reads and then writes
    # (an idempotency check, a cancel) waits its turn on busy_timeout instead of failing
    # with "database is locked" when another writer got in between. SQLite is the
    # embedded, single-host mode, where serialising transactions costs little.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def normalize_url(url: str) -> URL:
    """``postgresql://`` (and ``postgres://``) mean psycopg2, the driver we install.

    SQLAlchemy 2.1 changed the default PostgreSQL driver to psycopg 3; an explicit
    ``postgresql+driver://`` is left alone.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def create_db_engine(url: str) -> Engine:
    """A new engine for ``url`` with the service's connection settings."""
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        # 20 kept connections: under 16 concurrent submits a pool of 5 kept opening
        # and closing connections (bench/service.py), which cost PostgreSQL more CPU
        # than the inserts. connect_timeout: an unreachable host fails fast (IDC.0503).
        url, pool_pre_ping=True, pool_size=20, max_overflow=10, pool_recycle=1800,
        hide_parameters=True, connect_args={"connect_timeout": 5}
    )


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: IDCARD_DATABASE_URL)."""
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def dispose_engines(*, close: bool = True) -> None:
    """Forget every engine. In a forked child (Celery prefork ``worker_process_init``)
    pass ``close=False``: the parent's connections must not be closed from the child."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()


def new_session(url: str | None = None) -> Session:
    return SessionLocal(bind=get_engine(url))


def commit_without_waiting(session: Session) -> None:
    """Let this transaction's commit return before its WAL is on disk (PostgreSQL's
    ``synchronous_commit = off``, for this transaction only; SQLite: nothing).

    Waiting for the disk costs a few milliseconds per commit (``fdatasync``), four of the
    synchronous route's five commits. PostgreSQL writes WAL in order, so the next
    ordinary commit on the server makes such a transaction durable as well; what a crash
    of the database server can lose is the last fraction of a second of them, never
    their consistency. Use it only where that loss is harmless: the synchronous route's
    steps before its answer, whose own audited read commits normally (and whose caller
    gets an error, not an answer, if the server crashed meanwhile), and a job's start
    (lost, the job is queued again and re-run). Never for what a caller has been told,
    such as an accepted asynchronous job.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NO_SYNC_COMMIT)


_NO_SYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = new_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
