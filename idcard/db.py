"""Engines and sessions, configured from the settings.

The state-machine functions (``idcard.jobs``) only flush; the caller owns the
transaction, normally through ``session_scope()``, which commits on success.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from idcard.models import Base
from idcard.settings import get_settings

metadata = Base.metadata

# Unbound: the engine is chosen per call (settings may change in tests). expire_on_commit
# is off so that a job returned from a committed scope can still be serialised.
SessionLocal = sessionmaker(autoflush=True, expire_on_commit=False)

_engines: dict[tuple[str, bool, bool], Engine] = {}
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


# A pooled connection idle for longer than this is pinged before it is handed out; one
# used more recently is trusted (see ``_ping_if_idle``).
PING_AFTER_IDLE_SECONDS = 5.0


def create_db_engine(url: str, *, relaxed: bool = False, autocommit: bool = False) -> Engine:
    """A new engine for ``url`` with the service's connection settings.

    ``relaxed``: its transactions commit without waiting for the disk (PostgreSQL's
    ``synchronous_commit = off`` for the whole connection; see ``new_session``);
    ``autocommit``: every statement is its own transaction. SQLite ignores both.
    """
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if relaxed:
        connect_args["options"] = "-c synchronous_commit=off"
    engine = create_engine(
        # 20 kept connections: under 16 concurrent submits a pool of 5 kept opening
        # and closing connections (bench/service.py), which cost PostgreSQL more CPU
        # than the inserts. connect_timeout: an unreachable host fails fast (IDC.0503).
        # LIFO: the connection used last is the one reused, so a quiet service keeps
        # using one warm connection rather than cycling through idle ones.
        # The relaxed and autocommit engines serve only the synchronous route's steps
        # and the workers' transitions: smaller pools, so that together they stay
        # within PostgreSQL's default max_connections (100) for a few processes.
        url, pool_size=5 if autocommit else 10 if relaxed else 20, max_overflow=10,
        pool_recycle=1800, pool_use_lifo=True, hide_parameters=True,
        connect_args=connect_args,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    event.listen(engine, "checkin", _mark_idle)
    event.listen(engine, "checkout", partial(_ping_if_idle, engine))
    return engine


def _mark_idle(_dbapi_conn: Any, record: Any) -> None:
    if record is not None:
        record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Check a connection that has sat in the pool for a while (the server may have
    restarted, a firewall may have dropped it) before it is handed out; a dead one makes
    the pool connect afresh (``DisconnectionError``).

    Instead of ``pool_pre_ping``, which pings on every checkout: a round trip that was
    each transaction's largest fixed cost after its own statements (the synchronous
    route has six transactions). A connection used within the last
    PING_AFTER_IDLE_SECONDS is trusted; if the server went away within that time the
    statement fails with a disconnect error, SQLAlchemy discards every connection of the
    pool made before it, and the caller gets IDC.0503 (the worker retries, see
    ``worker.jobrunner.with_db_retry``).
    """
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        alive = engine.dialect.do_ping(dbapi_conn)
    except Exception:  # noqa: BLE001 - any failure of the ping: a new connection
        alive = False
    if not alive:
        raise DisconnectionError("pooled connection failed its ping")


def get_engine(url: str | None = None, *, relaxed: bool = False,
               autocommit: bool = False) -> Engine:
    """The process-wide engine for ``url`` (default: IDCARD_DATABASE_URL); ``relaxed``
    and ``autocommit``: see ``new_session`` (on SQLite, the one ordinary engine)."""
    url = url or get_settings().database_url
    key = (url, relaxed, autocommit)
    with _lock:  # every session asks: a dictionary lookup, no URL parsing, once made
        engine = _engines.get(key)
        if engine is None:
            if normalize_url(url).get_backend_name() == "sqlite":
                plain = _engines.get((url, False, False))
                engine = plain or create_db_engine(url)
                _engines[(url, False, False)] = engine
            else:
                engine = create_db_engine(url, relaxed=relaxed, autocommit=autocommit)
            _engines[key] = engine
        return engine


def dispose_engines(*, close: bool = True) -> None:
    """Forget every engine. In a forked child (Celery prefork ``worker_process_init``)
    pass ``close=False``: the parent's connections must not be closed from the child."""
    with _lock:
        for engine in set(_engines.values()):  # SQLite's one engine may stand under 3 keys
            engine.dispose(close=close)
        _engines.clear()


def new_session(url: str | None = None, *, relaxed: bool = False,
                autocommit: bool = False) -> Session:
    """A session on the process-wide engine for ``url``.

    ``autocommit=True`` (PostgreSQL): every statement commits by itself, with no BEGIN
    and COMMIT round trips around it; for work that is one statement, or a few that need
    not be atomic together, such as a worker's transition (``idcard.jobs`` makes each
    transition with its audit events one statement on PostgreSQL) and the reads around
    it. SQLite: an ordinary session, whose transaction makes the same steps atomic.

    ``relaxed=True``: its commits return before their WAL is on disk (PostgreSQL's
    ``synchronous_commit = off``, set on the connections of a second engine, so that it
    costs no statement; SQLite: an ordinary session).

    Waiting for the disk costs a few milliseconds per commit (``fdatasync``), for four
    of the synchronous route's five writing transactions. PostgreSQL writes WAL in
    order, so the next ordinary commit on the server makes such a transaction durable as
    well; what a crash of the database server can lose is the last fraction of a second
    of them, never their consistency. Use it only where that loss is harmless: the
    synchronous route's steps before its answer, whose own audited read commits normally
    (and whose caller gets an error, not an answer, if the server crashed meanwhile),
    and a job's start (lost, the job is queued again and re-run). Never for what a
    caller has been told, such as an accepted asynchronous job.
    """
    return SessionLocal(bind=get_engine(url, relaxed=relaxed, autocommit=autocommit))


@contextmanager
def session_scope(url: str | None = None, *, relaxed: bool = False,
                  autocommit: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception (``relaxed``,
    ``autocommit``: see ``new_session``)."""
    session = new_session(url, relaxed=relaxed, autocommit=autocommit)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
