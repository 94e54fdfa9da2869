"""The Celery app of the workers, configured from the settings.

Run it with ``idcard-ocr worker`` (or ``celery -A worker.celery_app worker``). Messages
carry only ids, as JSON; results are in SQL, so there is no result backend. Delivery is
at least once: a message is acknowledged after its task ran (``acks_late``) and goes back
to the queue if the worker process dies under it (``reject_on_worker_lost``); the tasks are
idempotent, so running one twice is harmless.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import tempfile
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from idcard.db import dispose_engines
from idcard.inputs import forget_clients as forget_redis_clients
from idcard.queues import (
    ALL_QUEUES,
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
    QUEUE_WEBHOOKS,
    TASK_DELIVER_WEBHOOK,
    TASK_PURGE,
    TASK_RECOGNIZE,
    TASK_RECONCILE,
)
from idcard.settings import Settings, get_settings

log = logging.getLogger(__name__)

RECONCILE_EVERY_SECONDS = 60.0
PURGE_EVERY_SECONDS = 600.0
RECOGNITION_QUEUES = frozenset({QUEUE_INTERACTIVE, QUEUE_BULK})


def visibility_timeout(settings: Settings) -> float:
    """How long Redis lets a delivered, unacknowledged message wait before handing it to
    another worker. A worker that dies (SIGKILL, lost host) leaves its message there;
    after this long it runs again elsewhere. It is the job deadline, the same patience the
    reconciler has, but never shorter than twice the longest webhook backoff: a retry
    waiting for its countdown is also an unacknowledged message, and must not be
    duplicated while it waits."""
    longest_backoff = settings.webhook_backoff_base_seconds * 2 ** max(
        0, settings.webhook_max_attempts - 2)
    return max(settings.job_deadline_seconds, 2 * longest_backoff, 1.0)


def reconcile_every(settings: Settings) -> float:
    """How often beat runs the reconciler: every RECONCILE_EVERY_SECONDS, or every half
    IDCARD_JOB_DEADLINE_SECONDS when that is shorter, so that a lost job is found within
    one and a half deadlines whatever the deadline."""
    return max(1.0, min(RECONCILE_EVERY_SECONDS, settings.job_deadline_seconds / 2))


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    reconcile_seconds = reconcile_every(settings)
    app = Celery("idcard", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message per process at a time: a long job never sits on a queued one, and a
        # dying process takes at most one message down with it.
        worker_prefetch_multiplier=1,
        # acks_late messages of a lost connection are redelivered anyway; stop the
        # running copies rather than finishing them twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # The same exchange and routing key that a plain ``send_task(..., queue=name)``
        # declares, so that any producer's messages land in these queues.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name)
                     for name in ALL_QUEUES],
        task_default_queue=QUEUE_INTERACTIVE,
        task_routes={
            TASK_RECOGNIZE: {"queue": QUEUE_INTERACTIVE},  # the API picks bulk per job
            TASK_DELIVER_WEBHOOK: {"queue": QUEUE_WEBHOOKS},
            TASK_RECONCILE: {"queue": QUEUE_MAINTENANCE},
            TASK_PURGE: {"queue": QUEUE_MAINTENANCE},
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # Redis down: keep trying, never exit
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        beat_schedule={
            "reconcile-stuck-jobs": {
                "task": TASK_RECONCILE,
                "schedule": reconcile_seconds,
                # A tick nobody ran in time is superseded by the next one.
                "options": {"queue": QUEUE_MAINTENANCE,
                            "expires": reconcile_seconds - min(5.0, reconcile_seconds / 4)},
            },
            "purge-expired": {
                "task": TASK_PURGE,
                "schedule": PURGE_EVERY_SECONDS,
                "options": {"queue": QUEUE_MAINTENANCE, "expires": PURGE_EVERY_SECONDS - 10},
            },
        },
        beat_schedule_filename=os.path.join(tempfile.gettempdir(),
                                            "idcard-ocr-celerybeat-schedule"),
        enable_utc=True,
        timezone="UTC",
    )
    return app


app = make_app()

_consumes_recognition = True  # decided in the parent (worker_init), read by children


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """In the parent, before the pool forks."""
    global _consumes_recognition
    queues = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _consumes_recognition = bool(queues & RECOGNITION_QUEUES)
    concurrency = getattr(sender, "concurrency", None) or 1
    if concurrency > 1 and not os.environ.get("IDCARD_OCR_THREADS"):
        # N processes each with a thread per core would oversubscribe the CPUs.
        os.environ["IDCARD_OCR_THREADS"] = "1"
        log.info("%d worker processes: IDCARD_OCR_THREADS=1 each", concurrency)


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    """In each forked pool process."""
    # The parent's pooled connections must not be shared (nor closed) by a child.
    dispose_engines(close=False)
    forget_redis_clients()
    if _consumes_recognition:
        # Load the OCR models now, so that the first job is not the slow one.
        import time

        from worker.recognition.ocr import get_ocr

        t0 = time.monotonic()
        get_ocr()
        log.info("OCR models loaded in %d ms", (time.monotonic() - t0) * 1000)


# --- what the broker holds -------------------------------------------------------------

# kombu's Redis transport: one list per queue and priority step, and every delivered but
# unacknowledged message (running, or waiting for its countdown) in one hash.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_UNACKED_KEY = "unacked"
_JOB_ID = re.compile(rb"[0-9a-f]{32}")
SCAN_LIMIT = 20000


def _ids_in_message(raw: bytes | str) -> set[str]:
    try:
        payload = json.loads(raw)
        if isinstance(payload, list):  # unacked entries: [message, exchange, routing_key]
            payload = payload[0]
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode()
    except (ValueError, KeyError, TypeError, IndexError):
        return set()
    # The body is [args, kwargs, embed]: our tasks' args are job ids (and event ids).
    return {m.decode() for m in _JOB_ID.findall(body)}


def broker_job_ids(app: Celery, queues: tuple[str, ...] = ALL_QUEUES,
                   limit: int = SCAN_LIMIT) -> tuple[set[str], set[str]]:
    """(ids of jobs with a message in Redis, queues too long to scan).

    Read-only; for the reconciler, to tell a lost message from one still waiting.
    """
    ids: set[str] = set()
    too_long: set[str] = set()
    with app.connection_for_read() as conn:
        client = conn.default_channel.client
        for queue in queues:
            for step in _PRIORITY_STEPS:
                key = queue if step == 0 else f"{queue}{_PRIORITY_SEPARATOR}{step}"
                if client.llen(key) > limit:
                    too_long.add(queue)
                    continue
                for raw in client.lrange(key, 0, limit):
                    ids |= _ids_in_message(raw)
        for raw in client.hvals(_UNACKED_KEY):
            ids |= _ids_in_message(raw)
    return ids, too_long
