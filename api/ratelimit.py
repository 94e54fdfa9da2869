"""Per-project rate limits: ``APIGW.0308`` with ``Retry-After`` past the limit.

A project may make ``limit`` requests per minute: a token bucket that holds a minute's
worth of requests (a burst of ``limit`` is allowed) and refills continuously at
``limit / 60`` per second, kept as one "theoretical arrival time" per project (GCRA).
The limit is the project's ``rate_limit_per_minute``, else
``IDCARD_RATE_LIMIT_PER_MINUTE``; 0 means unlimited. Only authenticated requests count,
so nobody can spend another project's allowance.

- :class:`RedisRateLimiter` (the service): one Lua script per request, atomic, on
  Redis's clock, shared by every API process.
- :class:`MemoryRateLimiter` (``serve --embedded``: one process, no Redis).

If Redis is unreachable the service stays available: each API process limits on its
own (``MemoryRateLimiter``, so N processes allow N times the limit) and logs a warning,
and Redis is tried again after ``RETRY_REDIS_AFTER_SECONDS``. A bank's synchronous
traffic must not stop because the limiter's store is down; authentication does not
depend on Redis.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from idcard.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)

KEY_PREFIX = "idcard:ratelimit:"
RETRY_REDIS_AFTER_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.25
_WINDOW_US = 60_000_000  # a minute, in microseconds

# KEYS[1]: the project's bucket; ARGV[1]: requests per minute. Returns 0 (allowed) or
# the microseconds to wait. TIME is Redis's clock: API hosts' clocks do not matter.
_GCRA_LUA = """
local limit = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 60000000 / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - 60000000
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""


class RateLimitExceeded(ServiceError):
    def __init__(self, limit: int, wait_seconds: float) -> None:
        retry_after = max(1, math.ceil(wait_seconds))
        super().__init__(ErrorCode.RATE_LIMITED,
                         f"rate limit of {limit} requests per minute exceeded: retry after "
                         f"{retry_after} s")
        self.headers = {"Retry-After": str(retry_after)}


class RateLimiter(Protocol):
    def acquire(self, key: str, limit: int) -> float:
        """Take one request from ``key``'s bucket of ``limit`` per minute: 0.0 if it is
        allowed, else the seconds until it would be."""

    def close(self) -> None:
        """Release connections."""


def check(limiter: RateLimiter, project_id: str, limit: int) -> None:
    """Raises :class:`RateLimitExceeded` when the project is over ``limit`` (0: none)."""
    if limit <= 0:
        return
    wait = limiter.acquire(project_id, limit)
    if wait > 0:
        raise RateLimitExceeded(limit, wait)


class MemoryRateLimiter:
    """GCRA in this process (thread-safe)."""

    _PRUNE_AT = 10_000

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> float:
        interval = 60.0 / limit
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, now), now)
            new_tat = tat + interval
            allow_at = new_tat - 60.0
            if allow_at > now:
                return allow_at - now
            self._tat[key] = new_tat
            if len(self._tat) > self._PRUNE_AT:
                self._tat = {k: v for k, v in self._tat.items() if v > now}
            return 0.0

    def close(self) -> None:
        pass


class RedisRateLimiter:
    """GCRA in Redis (one atomic script per request), falling back to a per-process
    limiter while Redis is unreachable."""

    def __init__(self, redis_url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(_GCRA_LUA)
        self._fallback = MemoryRateLimiter()
        self._down_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> float:
        if time.monotonic() >= self._down_until:
            try:
                waited = self._script(keys=[KEY_PREFIX + key], args=[limit])
                return int(waited) / 1_000_000
            except self._errors as exc:
                with self._lock:
                    if time.monotonic() >= self._down_until:  # once per outage window
                        log.warning("rate limiter: Redis unavailable (%s); limiting per "
                                    "process for %.0f s", type(exc).__name__,
                                    RETRY_REDIS_AFTER_SECONDS)
                    self._down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
        return self._fallback.acquire(key, limit)

    def close(self) -> None:
        self._client.close()
