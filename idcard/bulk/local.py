"""Local mode: a pool of processes, each loading the OCR engine once, reading the items'
files (or downloading their URLs with the workers' SSRF-safe fetcher) and recognising
them. Results come back in completion order.

Processes are started with ``spawn``: a fresh interpreter owes nothing to the parent's
threads or open files. With several processes each one uses one OCR thread (unless
``IDCARD_OCR_THREADS`` says otherwise), as the Celery workers do, so that they do not
fight over the cores. A process that dies under an item (out of memory, a crash in a
native library) is replaced, and the items it may have held are tried once more; an item
that takes a second process down with it is answered ``AIS.0105``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcard.errors import ErrorCode, ServiceError
from idcard.options import RecognitionOptions

# Items queued per process beyond the one it works on: keeps every process busy
# without holding many pending items (and their results) in memory.
_QUEUED_PER_PROCESS = 2
MAX_ATTEMPTS = 2
_PARENT_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class LocalTask:
    key: str
    options: RecognitionOptions
    path: str | None = None
    url: str | None = None


# What a process sends back: (key, response body, engine seconds or None).
Done = Callable[[str, dict[str, Any], float | None], None]


def _exit_with_parent(parent: int) -> None:
    # A pool process holds both ends of its task queue, so it never sees the parent go:
    # after a kill -9 of the batch it would wait forever, holding the models' memory.
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_SECONDS)
    os._exit(1)


def _init_process(ocr_threads: str | None) -> None:
    # Ctrl-C reaches the whole process group: the parent alone decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="idcard-batch-parent-watch").start()
    if ocr_threads:
        os.environ["IDCARD_OCR_THREADS"] = ocr_threads
        if ocr_threads == "1":
            import cv2

            cv2.setNumThreads(1)
    from worker.recognition.ocr import get_ocr

    get_ocr()  # the models, once per process, before its first item


def _fetch(url: str) -> bytes:
    try:
        from worker.fetcher import fetch_url
    except ImportError:  # httpx is in the [service] extra
        raise ServiceError(ErrorCode.URL_DOWNLOAD_FAILED,
                           "downloading URLs needs pip install 'idcard-ocr[service]'") from None
    return fetch_url(url)


def recognize_task(task: LocalTask) -> tuple[str, dict[str, Any], float | None]:
    """Runs in a pool process: (key, response body, seconds spent recognising)."""
    try:
        return _recognize_task(task)
    except Exception:  # noqa: BLE001 - one item's failure, never the batch's traceback
        return task.key, ServiceError(ErrorCode.RECOGNITION_FAILED,
                                      "recognition failed inside the service").to_body(), None


def _recognize_task(task: LocalTask) -> tuple[str, dict[str, Any], float | None]:
    from idcard.cli import recognize_file
    from worker.recognition.engine import recognize

    if task.path is not None:
        t0 = time.perf_counter()
        body, _ = recognize_file(Path(task.path), task.options)
        return task.key, body, time.perf_counter() - t0
    assert task.url is not None
    try:
        data = _fetch(task.url)
    except ServiceError as exc:
        return task.key, exc.to_body(), None
    t0 = time.perf_counter()
    try:
        body = recognize(data, task.options)
    except ServiceError as exc:
        body = exc.to_body()
    return task.key, body, time.perf_counter() - t0


def _crashed() -> dict[str, str]:
    return ServiceError(ErrorCode.RECOGNITION_FAILED,
                        "recognition failed: its process ended abruptly").to_body()


class LocalRunner:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        threads = os.environ.get("IDCARD_OCR_THREADS") or ("1" if processes > 1 else None)
        self._initargs = (threads,)
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process, initargs=self._initargs)

    def run(self, tasks: Iterable[LocalTask], done: Done) -> None:
        """Recognise every task, calling ``done`` as each finishes. On KeyboardInterrupt
        the processes are stopped at once and the interrupt goes on up."""
        pending = iter(tasks)
        retry: list[tuple[LocalTask, int]] = []
        running: dict[Future, tuple[LocalTask, int]] = {}
        limit = self.processes * (1 + _QUEUED_PER_PROCESS)
        try:
            while True:
                while len(running) < limit:
                    if retry:
                        task, attempt = retry.pop()
                    else:
                        task = next(pending, None)
                        if task is None:
                            break
                        attempt = 1
                    if self._pool is None:  # not before there is work: no models to load
                        self._pool = self._new_pool()
                    running[self._pool.submit(recognize_task, task)] = (task, attempt)
                if not running:
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    task, attempt = running.pop(future)
                    try:
                        key, body, seconds = future.result()
                    except BrokenProcessPool:
                        broken = True
                        if attempt >= MAX_ATTEMPTS:
                            done(task.key, _crashed(), None)
                        else:
                            retry.append((task, attempt + 1))
                        continue
                    done(key, body, seconds)
                if broken:
                    # Every item still out was lost with the pool: try them again.
                    for task, attempt in running.values():
                        if attempt >= MAX_ATTEMPTS:
                            done(task.key, _crashed(), None)
                        else:
                            retry.append((task, attempt + 1))
                    running.clear()
                    if self._pool is not None:
                        self._pool.shutdown(wait=True)
                    self._pool = None
        except BaseException:
            self._stop()
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _stop(self) -> None:
        """Stop the processes now, not after the items they are on."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
        if terminate is not None:
            terminate()
            return
        # Before 3.14 there is no public way to stop a busy ProcessPoolExecutor; its
        # process table is gone after shutdown(), so it is read first.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
