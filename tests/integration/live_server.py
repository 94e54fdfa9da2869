"""Serving an app for real (uvicorn on a free 127.0.0.1 port) and test dispatchers."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from api.dispatch import Dispatcher

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_thread(app: object, **options: object) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yields its base URL.
    ``options`` go to ``uvicorn.Config`` (default: warnings only)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {"log_level": "warning", **options}
    config = uvicorn.Config(app, lifespan="on", **options)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_in_subprocess(args: list[str], env: dict[str, str], port: int,
                        log_path: Path) -> Iterator[str]:
    """``idcard-ocr serve`` (or any command serving on ``port``) as a child process."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(base), 30, "the API did not start",
                       alive=lambda: proc.poll() is None, log_path=log_path)
            yield base
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, message: str, *,
               alive: Callable[[], bool] | None = None, log_path: Path | None = None,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if (alive is not None and not alive()) or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise AssertionError(f"{message}\n{tail}")
        time.sleep(interval)


class HoldingDispatcher:
    """Wraps a dispatcher; while ``held``, enqueued jobs wait here and stay 'queued' in
    the database (to cancel a job before it starts, deterministically)."""

    def __init__(self, inner: Dispatcher) -> None:
        self.inner = inner
        self.held = False
        self.parked: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.held = True

    def release(self) -> None:
        with self._lock:
            self.held = False
            parked, self.parked = self.parked, []
        for job_id, queue in parked:
            self.inner.enqueue(job_id, queue)

    def forget(self) -> None:
        """Stop holding and drop the parked jobs: they stay 'queued' in the database."""
        with self._lock:
            self.held = False
            self.parked = []

    def enqueue(self, job_id: str, queue: str) -> None:
        with self._lock:
            if self.held:
                self.parked.append((job_id, queue))
                return
        self.inner.enqueue(job_id, queue)

    def wait(self, job_id: str, timeout: float) -> str | None:
        return self.inner.wait(job_id, timeout)

    def ready(self) -> bool:
        return self.inner.ready()

    def queue_depths(self) -> dict[str, int]:
        return self.inner.queue_depths()

    def close(self) -> None:
        self.inner.close()
