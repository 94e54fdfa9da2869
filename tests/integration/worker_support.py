"""Helpers for the worker tests: real Celery worker processes, local HTTP servers, Redis.

Worker processes are started as subprocesses in their own session (process group), so a
test can SIGKILL a whole worker (main process and pool children) like a lost host, or
SIGTERM it like an orchestrator does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
SLOW_WORKER = Path(__file__).with_name("slow_worker.py")
DEFAULT_TEST_REDIS = "redis://127.0.0.1:6379"
# Database numbers tried in turn; each run claims one, so that two test runs at once (two
# developers, two CI jobs on one host) never consume each other's messages.
TEST_REDIS_DBS = (13, 12, 11, 10, 9, 8)
_CLAIM_KEY = "idcard-test:claimed-by"


def _unreachable(url: str, exc: Exception) -> None:
    reason = f"Redis unreachable at {url} ({type(exc).__name__})"
    if in_ci():
        pytest.fail(f"{reason}; CI requires it", pytrace=False)
    pytest.skip(f"{reason}; set IDCARD_TEST_REDIS_URL to run these tests")


@contextmanager
def claimed_redis_db() -> Iterator[str]:
    """An empty Redis database for this test run, its URL; emptied again at the end.

    IDCARD_TEST_REDIS_URL names one outright; otherwise the first free database of
    TEST_REDIS_DBS on 127.0.0.1:6379 is claimed with a key that expires on its own should
    the run die. Skips (fails under CI) when Redis does not answer.
    """
    import redis

    fixed = os.environ.get("IDCARD_TEST_REDIS_URL")
    candidates = [fixed] if fixed else [f"{DEFAULT_TEST_REDIS}/{n}" for n in TEST_REDIS_DBS]
    token = f"{os.getpid()}-{time.time()}"
    for url in candidates:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            if fixed:
                client.flushdb()
            elif not client.set(_CLAIM_KEY, token, nx=True, ex=1800):
                client.close()
                continue
            for key in client.scan_iter(count=500):  # leftovers of an earlier run
                if key != _CLAIM_KEY.encode():
                    client.delete(key)
        except Exception as exc:  # any failure means: not usable here
            client.close()
            _unreachable(url, exc)
        try:
            yield url
        finally:
            try:
                client.flushdb()
            finally:
                client.close()
        return
    pytest.skip(f"no free Redis database among {TEST_REDIS_DBS} (other test runs?)")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- worker processes -------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One Celery worker (a process group), its node name and its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, app: Any, timeout: float = 60.0) -> None:
        def pong() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log_text()}")
            replies = app.control.ping(destination=[self.name], timeout=0.5)
            return any(self.name in reply for reply in replies)

        try:
            wait_until(pong, timeout, f"worker {self.name} to answer a ping", interval=0.2)
        except AssertionError:
            raise AssertionError(f"worker {self.name} not ready:\n{self.log_text()}") from None

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once (a lost host)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the main process, as an orchestrator does; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc is not None:
            try:  # stragglers of the group (pool children of a killed parent)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def stop_all(workers: list[WorkerProcess]) -> None:
        """SIGTERM them all first, then wait for each: their shutdowns overlap."""
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def celery_worker(name: str, queues: str, env: dict[str, str], log_dir: Path, *,
                  slow_seconds: float | None = None, cli: bool = False,
                  beat: bool = False) -> WorkerProcess:
    """A worker process: ``idcard-ocr worker`` when ``cli``, else ``celery -A
    worker.celery_app worker``, or the slowed-down one of ``slow_worker.py``; ``beat``
    also runs the periodic tasks (the reconciler) in it."""
    common = ["--loglevel=info", f"--hostname={name}", *(["--beat"] if beat else [])]
    if cli:
        argv = [sys.executable, "-m", "idcard.cli", "worker", f"--queues={queues}",
                "--concurrency=1", *common]
    else:
        head = ([sys.executable, str(SLOW_WORKER)] if slow_seconds is not None
                else [sys.executable, "-m", "celery", "-A", "worker.celery_app"])
        argv = [*head, "worker", f"--queues={queues}", "--concurrency=1", "--pool=prefork",
                "--without-mingle", "--without-gossip", *common]
    env = dict(env)
    if slow_seconds is not None:
        env["IDCARD_TEST_SLOW_SECONDS"] = str(slow_seconds)
    return WorkerProcess(name, argv, env, log_dir / f"{name.split('@')[0]}.log")


# --- a local HTTP server ----------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], None]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (a timeout, the size cap) is what the tests provoke.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with per-path handlers; records requests."""

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[str, Handler] = {}
        self.received: list[Received] = []
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.received.append(Received(self.command, self.path,
                                                dict(self.headers.items()), body))
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    send(self, 404, b"not found")
                else:
                    route(self)

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *_: Any) -> None:  # quiet
                pass

        # ``port``: a fixed one, to bring a receiver back where it was (0: any free one).
        self.httpd = _QuietServer(("127.0.0.1", port), _Handler)
        self.port = self.httpd.server_address[1]
        # A short poll interval: shutdown() waits for it.
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
         headers: dict[str, str] | None = None, *, length: bool = True) -> None:
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    if length:
        h.send_header("Content-Length", str(len(body)))
    else:
        h.send_header("Connection", "close")  # the body ends when the connection does
        h.close_connection = True
    h.end_headers()
    if body:
        h.wfile.write(body)


@contextmanager
def local_server(port: int = 0) -> Iterator[LocalServer]:
    with LocalServer(port) as server:
        yield server
