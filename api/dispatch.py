"""Handing jobs to whoever runs them, and waiting for them to end.

The API only knows job ids and queue names. Two implementations:

- :class:`CeleryDispatcher` (the service): sends ``idcard.queues.TASK_RECOGNIZE`` by
  name to the broker and waits for the worker's message on
  ``idcard.queues.done_channel(job_id)``.
- :class:`InProcessDispatcher` (``serve --embedded``, tests): runs a callable
  ``run(job_id) -> status`` on two small thread pools, one per queue.

Whatever ``wait`` returns, the database is the truth: callers re-read the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select

from idcard.db import new_session
from idcard.inputs import InputStash
from idcard.models import TERMINAL_STATUSES, Job
from idcard.queues import (
    ALL_QUEUES,
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    TASK_RECOGNIZE,
    done_channel,
)

log = logging.getLogger(__name__)

_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
RECOGNITION_QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK)


@runtime_checkable
class Dispatcher(Protocol):
    def enqueue(self, job_id: str, queue: str) -> None:
        """Hand the job over; raises on failure (the broker is down)."""

    def wait(self, job_id: str, timeout: float) -> str | None:
        """Block until the job ends (its final status) or ``timeout`` (None)."""

    def ready(self) -> bool:
        """Can jobs be handed over right now?"""

    def queue_depths(self) -> dict[str, int]:
        """Jobs waiting per recognition queue (for /metrics)."""

    def close(self) -> None:
        """Release threads and connections (app shutdown)."""

    # ``input_stash``: an ``idcard.inputs.InputStash`` where the synchronous route leaves
    # its photo for the worker, or None to keep every photo in the database.
    # Optional: ``listen_for(job_id)`` before ``enqueue`` and ``stop_listening(job_id)``
    # (see CeleryDispatcher), for a ``wait`` that needs no first database read.


def job_status(job_id: str, database_url: str | None = None) -> str | None:
    """The job's status as committed in the database (None if there is no such job)."""
    with new_session(database_url) as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


# --- Celery ---------------------------------------------------------------------------


class _Waiter:
    """One caller waiting for one job: ``event`` is set with ``status`` (a final status),
    or without one when the database should be asked at once (the listener missed a
    while)."""

    __slots__ = ("event", "status", "covered")

    def __init__(self, covered: bool) -> None:
        self.event = threading.Event()
        self.status: str | None = None
        # Whether the listener was subscribed when the wait began: if not, a completion
        # may already have gone by unheard.
        self.covered = covered


class CompletionListener:
    """One Redis connection per API process, subscribed to every job's done channel
    (a pattern), read by one thread that wakes whoever waits for the job.

    A subscription per call would open and close a Redis connection each time (a
    ``PubSub`` disconnects when closed), several round trips on the synchronous route's
    path. The listener's connection is made once and made again after an error; while
    it is down, and right after it is back (completions may have gone by unheard), the
    waiters are told to ask the database.
    """

    def __init__(self, redis: Any, *, subscribe_timeout: float = 1.0) -> None:
        self._redis = redis
        self._subscribe_timeout = subscribe_timeout
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._subscribed = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefix = done_channel("")
        self.subscriptions = 0  # times the listener has (re)subscribed

    @property
    def listening(self) -> bool:
        return self._subscribed.is_set()

    @property
    def waiting(self) -> int:
        """Waits registered and not yet over."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def register(self, job_id: str) -> _Waiter:
        """Start hearing about ``job_id`` (before it is enqueued, so nothing is missed)."""
        self._start()
        if not self._subscribed.is_set():  # the first call, or Redis is reconnecting
            self._subscribed.wait(self._subscribe_timeout)
        waiter = _Waiter(covered=self._subscribed.is_set())
        with self._lock:
            self._waiters.setdefault(job_id, []).append(waiter)
        return waiter

    def unregister(self, job_id: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[job_id]

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="idcard-completions")
                self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            pubsub = self._redis.pubsub()
            try:
                pubsub.psubscribe(done_channel("*"))
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "psubscribe":
                        self.subscriptions += 1
                        self._subscribed.set()
                        if backoff > 0.1:
                            log.info("completion listener: subscribed again")
                        backoff = 0.1
                        self._wake_all()  # anything may have ended while we were away
                    elif kind == "pmessage":
                        self._deliver(message["channel"], message["data"])
            except Exception as exc:  # noqa: BLE001 - Redis down or restarted: reconnect
                if not self._closed.is_set() and backoff == 0.1:  # once per outage
                    log.warning("completion listener: %s; reconnecting",
                                type(exc).__name__)
            finally:
                self._subscribed.clear()
                self._wake_all()
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - the connection is broken anyway
                    pass
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _deliver(self, channel: bytes | str, data: bytes | str) -> None:
        channel = channel.decode() if isinstance(channel, bytes) else channel
        status = data.decode() if isinstance(data, bytes) else str(data)
        if not channel.startswith(self._prefix) or status not in _TERMINAL:
            return
        with self._lock:
            waiters = list(self._waiters.get(channel[len(self._prefix):], ()))
        for waiter in waiters:
            waiter.status = status
            waiter.event.set()

    def _wake_all(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for waiter in waiters:
            waiter.event.set()  # no status: ask the database

    def close(self) -> None:
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=3)


class CeleryDispatcher:
    """Sends recognition tasks by name; waits on Redis pub/sub with a database fallback.

    Completions are heard by one ``CompletionListener`` per dispatcher. ``wait`` reads
    the job's status once when its wait began unheard (a job that ended before is seen
    in the database; one that ends after is heard). The status is also re-read every
    ``listening_poll_interval`` seconds in case a message is lost (Redis pub/sub is
    fire and forget: a reconnect drops messages), and every ``poll_interval`` seconds
    while Redis cannot be listened to at all. The first is longer: each read costs the
    API and PostgreSQL CPU that the recognitions running meanwhile need.
    """

    def __init__(
        self, broker_url: str, redis_url: str, database_url: str | None = None, *,
        poll_interval: float = 0.2, listening_poll_interval: float = 1.0,
    ) -> None:
        from celery import Celery
        from kombu import Queue
        from redis import Redis

        # A bare Celery app used only to publish: no task code, no worker imports.
        self._celery = Celery("idcard-api", broker=broker_url, set_as_current=False)
        self._celery.conf.update(
            # The same declarations as the workers' app: one direct route per queue.
            task_queues=[Queue(name, routing_key=name) for name in ALL_QUEUES],
            task_serializer="json",
            broker_connection_timeout=3.0,
            broker_connection_retry_on_startup=False,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1,
                                       "interval_step": 0.2, "interval_max": 0.5},
            broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 3},
        )
        self._redis = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=5,
                                     health_check_interval=30)
        self._database_url = database_url
        self._poll_interval = poll_interval
        self._listening_poll_interval = max(poll_interval, listening_poll_interval)
        self._lock = threading.Lock()
        self._listening: dict[str, _Waiter] = {}  # job id -> waiter (``listen_for``)
        self._completions = CompletionListener(self._redis)
        # The workers read IDCARD_REDIS_URL: the stash must be in that Redis database.
        self.input_stash: InputStash | None = InputStash(self._redis)

    def enqueue(self, job_id: str, queue: str) -> None:
        self._celery.send_task(TASK_RECOGNIZE, args=[job_id], queue=queue)

    def listen_for(self, job_id: str) -> None:
        """Start hearing about the job before it is enqueued (the synchronous route):
        no completion can come before, so ``wait`` skips its first database read, which
        would otherwise compete with the worker for the CPU while the job starts. Costs
        no I/O once the listener is subscribed. Call ``wait`` (or ``stop_listening``)
        afterwards."""
        waiter = self._completions.register(job_id)
        with self._lock:
            self._listening[job_id] = waiter

    def stop_listening(self, job_id: str) -> None:
        """Drop a ``listen_for`` that no ``wait`` will use (the enqueue failed)."""
        with self._lock:
            waiter = self._listening.pop(job_id, None)
        if waiter is not None:
            self._completions.unregister(job_id, waiter)

    def wait(self, job_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            waiter = self._listening.pop(job_id, None)
        # Heard from before its hand-over (``listen_for``), the job cannot have ended
        # unheard; otherwise the database is asked first.
        heard_from_start = waiter is not None and waiter.covered
        if waiter is None:
            waiter = self._completions.register(job_id)
        try:
            next_poll = (time.monotonic() + self._listening_poll_interval
                         if heard_from_start else 0.0)
            while (left := deadline - time.monotonic()) > 0:
                interval = (self._listening_poll_interval if self._completions.listening
                            else self._poll_interval)
                if time.monotonic() >= next_poll:
                    status = job_status(job_id, self._database_url)
                    if status in _TERMINAL:
                        return status
                    next_poll = time.monotonic() + interval
                step = max(0.0, min(left, next_poll - time.monotonic(), interval))
                if waiter.event.wait(step):
                    if waiter.status in _TERMINAL:
                        return waiter.status
                    waiter.event.clear()
                    next_poll = 0.0  # the listener was away: the database decides now
            return None
        finally:
            self._completions.unregister(job_id, waiter)

    def ready(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:  # noqa: BLE001 - any failure means: not ready
            return False

    def queue_depths(self) -> dict[str, int]:
        # Kombu's Redis transport keeps a queue in a list named after it, plus one list
        # per priority step ("<queue>\x06\x16<n>") when priorities are used.
        keys = {q: [q] + [f"{q}\x06\x16{n}" for n in (3, 6, 9)] for q in RECOGNITION_QUEUES}
        pipe = self._redis.pipeline(transaction=False)
        for names in keys.values():
            for name in names:
                pipe.llen(name)
        lengths = iter(pipe.execute())
        return {q: sum(next(lengths) for _ in names) for q, names in keys.items()}

    def close(self) -> None:
        with self._lock:
            self._listening = {}
        self._completions.close()
        self._redis.close()
        self._celery.close()


# --- in process -----------------------------------------------------------------------


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    status: str | None = None
    waiters: int = 0


class InProcessDispatcher:
    """Runs ``run(job_id) -> status`` on thread pools: one per queue, so that a bulk
    backlog never delays an interactive job.

    For one process with no broker (``serve --embedded``, tests). Jobs waiting in the
    pools are lost when the process stops; they stay 'queued' in the database.
    """

    def __init__(
        self, run: Callable[[str], str | None], *, interactive_threads: int = 2,
        bulk_threads: int = 1,
    ) -> None:
        self._run = run
        self._pools = {
            QUEUE_INTERACTIVE: ThreadPoolExecutor(interactive_threads,
                                                  thread_name_prefix="idcard-interactive"),
            QUEUE_BULK: ThreadPoolExecutor(bulk_threads, thread_name_prefix="idcard-bulk"),
        }
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._waiting = dict.fromkeys(self._pools, 0)
        self._closed = False
        self.input_stash: InputStash | None = None  # no Redis: photos in the database

    def enqueue(self, job_id: str, queue: str) -> None:
        pool = self._pools.get(queue)
        if pool is None:
            raise ValueError(f"unknown queue {queue!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError("dispatcher is closed")
            self._pending.setdefault(job_id, _Pending())
            self._waiting[queue] += 1
        pool.submit(self._execute, job_id, queue)

    def _execute(self, job_id: str, queue: str) -> None:
        with self._lock:
            self._waiting[queue] -= 1
        status = None
        try:
            status = self._run(job_id)
        except Exception:  # noqa: BLE001 - a crashed run must not kill the pool thread
            log.exception("in-process job run failed")
        with self._lock:
            pending = self._pending.get(job_id)
            if pending is not None:
                pending.status = status
                pending.done.set()
                if pending.waiters == 0:
                    del self._pending[job_id]

    def wait(self, job_id: str, timeout: float) -> str | None:
        with self._lock:
            pending = self._pending.get(job_id)
            if pending is None:
                return None  # ended already (or never enqueued here): read the database
            pending.waiters += 1
        try:
            return pending.status if pending.done.wait(timeout) else None
        finally:
            with self._lock:
                pending.waiters -= 1
                if pending.waiters == 0 and pending.done.is_set():
                    self._pending.pop(job_id, None)

    def ready(self) -> bool:
        return not self._closed

    def pending_ids(self) -> set[str]:
        """Jobs handed over and not ended yet (what a reconciler must not resend)."""
        with self._lock:
            return {job_id for job_id, p in self._pending.items() if not p.done.is_set()}

    def queue_depths(self) -> dict[str, int]:
        with self._lock:
            return dict(self._waiting)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
