"""Fault injection against real processes: a private ``redis-server`` and a private
PostgreSQL cluster that a test may kill, restart or stop without touching the shared
services, and a service stack (``idcard-ocr serve`` and Celery workers) running on them.

- ``PrivateRedis``: ``redis-server`` on a free port, keeping nothing on disk
  (``--save "" --appendonly no``, like the shared one), so a restart comes back empty and
  every queued Celery message is lost, as in production without persistence.
- ``PrivatePostgres``: a cluster made by ``initdb`` in a temporary directory, served by
  ``pg_ctl`` on a free port; ``stop()`` is ``pg_ctl stop -m fast`` (what a restart or a
  failover does to the clients). As root, the cluster runs as the ``postgres`` user (or
  ``nobody``): PostgreSQL refuses to run as root.
- ``fault_stack``: the API as a subprocess, worker subprocesses (``worker_support``), a
  project and the API client of ``api_support``, and the database as the source of truth
  for assertions.

A missing binary raises ``Unavailable``; the fixtures (``required``) turn it into a skip
with the reason, except under CI, where it is a failure. ``bench/soak.py`` uses the same
classes outside pytest.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery
from sqlalchemy import select

from idcard.db import dispose_engines, session_scope
from idcard.migrate import upgrade
from idcard.models import TERMINAL_STATUSES, Job, JobEvent, WebhookDelivery
from idcard.projects import create_project
from idcard.queues import ALL_QUEUES as QUEUE_NAMES
from idcard.settings import get_settings

from .api_support import Api
from .conftest import TEST_SECRET_KEY, in_ci
from .live_server import free_port, serve_in_subprocess
from .worker_support import WorkerProcess, celery_worker, wait_until

TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)
ALL_QUEUES = ",".join(QUEUE_NAMES)  # a worker's --queues consuming every queue
_SYSTEM_BIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")  # searched after PATH
T = TypeVar("T")


class Unavailable(RuntimeError):
    """What a private instance needs is not installed here; the message says what."""


def required(make: Callable[[], T]) -> T:
    """``make()``; when it raises ``Unavailable``, skip the test with the reason, or fail
    it under CI (``CI`` set): CI must run these tests."""
    try:
        return make()
    except Unavailable as exc:
        if in_ci():
            pytest.fail(f"{exc}; CI requires it", pytrace=False)
        pytest.skip(str(exc))


# --- a private Redis --------------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on 127.0.0.1:``port``, a child of the test process.

    ``appendonly=False`` (the default, like the shared instance): nothing survives a
    restart. ``appendonly=True`` keeps an append-only file in ``workdir`` (fsync always),
    for a test that needs persistence semantics.
    """

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server", path=os.pathsep.join(
            [os.environ.get("PATH", ""), *_SYSTEM_BIN]))
        if binary is None:
            raise Unavailable("redis-server not found on PATH (apt-get install redis-server)")
        self.binary = str(binary)
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.workdir), "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            argv += ["--appendfsync", "always"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        wait_until(self.ping, 15, f"redis-server on port {self.port}", interval=0.05)
        return self

    def ping(self) -> bool:
        import redis

        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{self.log_text()}")
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it held in memory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        """Kill it and start a new server on the same port (empty without appendonly)."""
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# --- a private PostgreSQL cluster ---------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: the newest
    /usr/lib/postgresql/<version>/bin, else wherever PATH has ``pg_ctl``."""
    def version(p: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in p.parent.name.split("."))
        except ValueError:
            return (0,)

    names = ("initdb", "pg_ctl", "postgres")
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version,
                         reverse=True):
        if all((bindir / n).exists() for n in names):
            return bindir
    found = shutil.which("pg_ctl")
    if found:
        bindir = Path(found).resolve().parent
        if all((bindir / n).exists() for n in names):
            return bindir
    return None


def _unprivileged_user() -> str | None:
    """Who runs the cluster when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


class PrivatePostgres:
    """A throwaway cluster: ``initdb`` into a temporary directory, trust authentication
    for ``postgres`` on 127.0.0.1:``port``; durability off (it is thrown away)."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found under "
                              "/usr/lib/postgresql/*/bin or on PATH (apt-get install "
                              "postgresql)")
        self.bindir = bindir
        self.user = _unprivileged_user()
        if os.geteuid() == 0 and self.user is None:
            raise Unavailable("running as root without a 'postgres' or 'nobody' user to "
                              "run initdb as")
        self.as_user: list[str] = []
        if self.user is not None:
            search = os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_BIN])
            runuser, su = shutil.which("runuser", path=search), shutil.which("su", path=search)
            if runuser is None and su is None:
                raise Unavailable("running as root without runuser or su to run initdb as "
                                  f"{self.user}")
            self.as_user = ([runuser, "-u", self.user, "--"] if runuser
                            else [su, self.user, "-s", "/bin/sh", "-c"])
        self.root = Path(tempfile.mkdtemp(prefix="idcard-faults-pg-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    def _run(self, *argv: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_user and self.as_user[-1] == "-c":  # su: one shell command line
            cmd = [*self.as_user, subprocess.list2cmdline(cmd)]
        elif self.as_user:
            cmd = [*self.as_user, *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n"
                               f"{done.stderr}\n{self.log_text()}")

    def initdb(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: sessions are ended, clients see their connections
        drop and new ones refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new migrated database; its URL."""
        from sqlalchemy import create_engine, text

        from idcard.db import normalize_url

        admin = create_engine(normalize_url(self.url()), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = self.url(name)
        upgrade(url)
        return url

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.initdb().start()
        yield cluster
    finally:
        cluster.destroy()


# --- the service on them ------------------------------------------------------------------


def service_env(db_url: str, redis_url: str, **settings: Any) -> dict[str, str]:
    """The environment of an API or worker process: this one's minus every IDCARD_*,
    plus the given database and Redis, the test key, and ``settings`` as IDCARD_<NAME>
    (``job_deadline_seconds=4`` is IDCARD_JOB_DEADLINE_SECONDS=4)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCARD_")}
    env.update({
        "IDCARD_DATABASE_URL": db_url,
        "IDCARD_REDIS_URL": redis_url,
        "IDCARD_SECRET_KEY": TEST_SECRET_KEY,
        # Receivers of the tests listen on 127.0.0.1 (nothing else may be private).
        "IDCARD_URL_ALLOW_HOSTS": "127.0.0.1",
        "IDCARD_RATE_LIMIT_PER_MINUTE": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({f"IDCARD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@dataclass
class FaultStack:
    """The API, the workers and what the tests read: the database is the truth."""

    env: dict[str, str]
    db_url: str
    redis: PrivateRedis
    api: Api
    api_log: Path
    log_dir: Path
    celery: Celery
    workers: list[WorkerProcess] = field(default_factory=list)

    # --- processes ----------------------------------------------------------------

    def start_worker(self, name: str, queues: str = ALL_QUEUES, *,
                     slow_seconds: float | None = None, beat: bool = False,
                     wait: bool = True, **settings: Any) -> WorkerProcess:
        """A worker process (``slow_seconds``: recognition sleeps first, see
        ``slow_worker.py``); ``beat`` runs the reconciler's schedule in it."""
        env = {**self.env, **{f"IDCARD_{k.upper()}": str(v) for k, v in settings.items()}}
        if beat:
            # The schedule file lives in the temporary directory: one of our own, so that
            # concurrent test runs on this host never share it.
            env["TMPDIR"] = str(self.log_dir)
        worker = celery_worker(f"{name}@localhost", queues, env, self.log_dir,
                               slow_seconds=slow_seconds, beat=beat)
        self.workers.append(worker)
        worker.start()
        if wait:
            worker.wait_ready(self.celery, timeout=90)
        return worker

    def logs(self) -> str:
        """The tails of every log, for assertion messages."""
        parts = [f"--- {w.name} ---\n{w.log_text()}" for w in self.workers]
        try:
            parts.append(f"--- api ---\n{self.api_log.read_text(errors='replace')[-3000:]}")
        except OSError:
            pass
        return "\n".join(parts)

    # --- the database ---------------------------------------------------------------

    def jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with session_scope(self.db_url) as s:
            rows = s.scalars(select(Job).where(Job.id.in_(list(job_ids)))).all()
            return {j.id: j for j in rows}

    def events(self, job_id: str) -> list[JobEvent]:
        with session_scope(self.db_url) as s:
            return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                  .order_by(JobEvent.id)))

    def event_names(self, job_id: str) -> list[str]:
        return [e.event for e in self.events(job_id)]

    def deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with session_scope(self.db_url) as s:
            return list(s.scalars(select(WebhookDelivery)
                                  .where(WebhookDelivery.job_id == job_id)
                                  .order_by(WebhookDelivery.attempt)))

    def wait_ended(self, job_ids: Sequence[str], timeout: float) -> dict[str, Job]:
        """Every job ended (in the database), or an AssertionError with the logs."""
        def ended() -> dict[str, Job] | None:
            rows = self.jobs(job_ids)
            return rows if all(r.status in TERMINAL for r in rows.values()) else None

        try:
            return wait_until(ended, timeout, f"{len(job_ids)} job(s) to end", interval=0.2)
        except AssertionError as exc:
            statuses = {j: r.status for j, r in self.jobs(job_ids).items()}
            raise AssertionError(f"{exc}: {statuses}\n{self.logs()}") from None

    def assert_ended_once(self, job_ids: Sequence[str], status: str = "succeeded") -> None:
        """Each job is ``status`` with exactly one terminal transition in its audit
        trail, and its attempts are recorded (started, or restarted, that often)."""
        rows = self.jobs(job_ids)
        assert set(rows) == set(job_ids), "jobs missing from the database"
        for job_id in job_ids:
            job = rows[job_id]
            names = self.event_names(job_id)
            assert job.status == status, (job_id, job.status, job.error_code, names)
            assert sum(names.count(t) for t in TERMINAL) == 1, (job_id, names)
            starts = names.count("started") + names.count("retried")
            assert job.attempts == starts >= 1, (job_id, job.attempts, names)


@contextmanager
def fault_stack(db_url: str, redis: PrivateRedis, log_dir: Path, **settings: Any
                ) -> Iterator[FaultStack]:
    """The API (``idcard-ocr serve`` on a free port) on ``db_url`` and ``redis``, a
    project and its client; workers are added by the test with ``start_worker``.
    ``settings`` go to every process as IDCARD_<NAME>. This process's settings point
    at the same database while the stack lives."""
    env = service_env(db_url, redis.url(), **settings)
    with ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for key in ("IDCARD_DATABASE_URL", "IDCARD_REDIS_URL", "IDCARD_SECRET_KEY"):
            mp.setenv(key, env[key])
        mp.delenv("IDCARD_EMBEDDED", raising=False)
        get_settings.cache_clear()
        stack.callback(get_settings.cache_clear)
        stack.callback(dispose_engines)
        with session_scope(db_url) as s:
            creds = create_project(s, "bank")
        celery = Celery("faults-test", broker=redis.url())
        celery.conf.update(broker_connection_retry_on_startup=True)
        stack.callback(celery.close)
        port = free_port()
        api_log = log_dir / "api.log"
        serve = [sys.executable, "-m", "idcard.cli", "serve", "--port", str(port),
                 "--log-level", "warning"]
        base = stack.enter_context(serve_in_subprocess(serve, env, port, api_log))
        api = Api(base, creds)
        stack.callback(api.http.close)
        faults = FaultStack(env, db_url, redis, api, api_log, log_dir, celery)
        stack.callback(lambda: WorkerProcess.stop_all(faults.workers))
        yield faults
