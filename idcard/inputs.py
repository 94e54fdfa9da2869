"""The photo of a synchronous call, on its way to the worker through Redis.

An asynchronous job's photo goes to the database (``job_inputs``): it may wait hours
behind a bulk backlog and must survive a restart of anything. The caller of the
synchronous route is waiting on the line: its photo only has to live until a worker has
read it, and writing 200 KB to the database (and its WAL), reading it back and deleting
it was the largest part of that route's overhead. So it waits in Redis, which carries
the job's message anyway:

- encrypted like everything at rest (``idcard.crypto``), under ``idcard:input:<job_id>``,
  never inside the Celery message (the message carries the job id only);
- with a TTL of the sync timeout plus ``GRACE_SECONDS``, so that nothing outlives a call
  whose API process died;
- deleted by whoever ends the job (the worker, a cancel) right after the ending commit;
- copied into the database when the call times out: IDC.0408 promises that the job goes
  on, so its photo becomes as durable as an asynchronous job's (``jobs.keep_input``).

The job row says where its photo is (``jobs.input_store``: NULL for the database,
``STORE_REDIS``); the worker falls back to the database when Redis has no copy.
Embedded mode (no Redis) keeps every photo in the database.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

log = logging.getLogger(__name__)

STORE_REDIS = "redis"
# How long a stashed photo outlives the sync timeout: time for the API to copy it into
# the database when the call times out, and for a worker that has started to read it.
GRACE_SECONDS = 60
_PREFIX = "idcard:input:"


def stash_key(job_id: str) -> str:
    return _PREFIX + job_id


class InputStash:
    """Stashed photos in one Redis database (``client``: a ``redis.Redis``)."""

    def __init__(self, client: Any) -> None:
        self._redis = client

    def put(self, job_id: str, data_enc: bytes, ttl_seconds: float) -> None:
        """Store ``data_enc`` (already encrypted); raises when Redis is unavailable."""
        self._redis.set(stash_key(job_id), data_enc, ex=max(1, math.ceil(ttl_seconds)))

    def get(self, job_id: str) -> bytes | None:
        """The encrypted photo, or None when there is none (expired, deleted)."""
        data = self._redis.get(stash_key(job_id))
        return bytes(data) if data is not None else None

    def discard(self, job_id: str) -> None:
        """Delete the photo; best effort (the TTL removes it anyway)."""
        try:
            self._redis.delete(stash_key(job_id))
        except Exception as exc:  # noqa: BLE001 - the TTL is the backstop
            log.warning("job %s: stashed input not deleted (%s); it expires on its own",
                        job_id, type(exc).__name__)


_clients: dict[str, Any] = {}
_lock = threading.Lock()


def shared_redis(url: str) -> Any:
    """This process's Redis client for ``url`` (made on first use, so a forked Celery
    child makes its own); short timeouts, as a down Redis must not hold a worker up."""
    with _lock:
        client = _clients.get(url)
        if client is None:
            import redis

            client = _clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=5)
        return client


def forget_clients() -> None:
    """Drop the clients (not closing their sockets): for a forked child, whose parent's
    connections are not its own."""
    with _lock:
        _clients.clear()


def worker_stash() -> InputStash:
    """The stash at IDCARD_REDIS_URL, as the worker reads it."""
    from idcard.settings import get_settings

    return InputStash(shared_redis(get_settings().redis_url))
