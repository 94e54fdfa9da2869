"""Replay protection for AK/SK-signed requests: a signature is accepted once.

An ``SDK-HMAC-SHA256`` signature is valid while its ``X-Sdk-Date`` is within 15 minutes
of the server's clock; whoever captures a signed request could send it again in that
window. After a signature has been verified, ``claim`` records it (the access key and a
hash of the signature, ``api.sdk_signature.replay_key``) until its date leaves the
window; the same signature seen again is refused (``APIGW.0301``). Only verified
signatures are recorded, so nobody can block a request they merely saw in flight by
sending its signature first with another body.

- :class:`RedisReplayGuard` (the service): one ``SET NX PX`` per signed request, shared
  by every API process.
- :class:`MemoryReplayGuard` (``serve --embedded``: one process, no Redis): bounded.

As with the rate limiter, an unreachable Redis does not stop authentication: each API
process then remembers signatures on its own (a replay to another process is not seen
during the outage), logs a warning, and tries Redis again after
``RETRY_REDIS_AFTER_SECONDS``.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from idcard.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "idcard:sdk-replay:"
RETRY_REDIS_AFTER_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.25
# The embedded mode's memory: about 150 bytes an entry. Past it the entries nearest to
# leaving their window are forgotten first (and a warning is logged).
MEMORY_MAX_ENTRIES = 200_000


class ReplayGuard(Protocol):
    async def claim(self, key: str, ttl_seconds: float) -> bool:
        """Record ``key`` for ``ttl_seconds``: True if it was not already recorded."""

    async def release(self, key: str) -> None:
        """Forget ``key`` (the request it stood for was refused before it did anything)."""


class MemoryReplayGuard:
    """Seen keys in this process (thread-safe), each until its own expiry."""

    def __init__(self, max_entries: int = MEMORY_MAX_ENTRIES,
                 clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._max = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, key); may hold stale pairs
        self._lock = threading.Lock()
        self._warned = False

    def _drop_one(self, now: float) -> bool:
        """Drop the entry expiring first (stale heap pairs are skipped); True if it was
        still live."""
        expiry, key = heapq.heappop(self._heap)
        if self._expiry.get(key) != expiry:
            return False
        del self._expiry[key]
        return expiry > now

    def add(self, key: str, ttl_seconds: float) -> bool:
        """``claim`` without the coroutine: True if ``key`` was not already here."""
        with self._lock:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                self._drop_one(now)
            expiry = self._expiry.get(key)
            if expiry is not None and expiry > now:
                return False
            while len(self._expiry) >= self._max and self._heap:
                if self._drop_one(now) and not self._warned:
                    self._warned = True
                    log.warning("replay guard: over %d signatures in memory; the oldest "
                                "are forgotten before their window ends", self._max)
            expiry = now + ttl_seconds
            self._expiry[key] = expiry
            heapq.heappush(self._heap, (expiry, key))
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            self._expiry.pop(key, None)  # its heap pair goes stale and is skipped later

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        return self.add(key, ttl_seconds)

    async def release(self, key: str) -> None:
        self.discard(key)

    def __len__(self) -> int:
        return len(self._expiry)


class RedisReplayGuard:
    """``SET key 1 NX PX ttl`` in Redis, falling back to a per-process guard while Redis
    is unreachable.

    An asyncio client on the server's event loop: one round trip (about 60 µs on a
    local Redis) and no hop to a worker thread. Make it inside the loop that uses it.
    """

    def __init__(self, redis_url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> None:
        import redis
        import redis.asyncio

        self._errors = (redis.RedisError, OSError)
        self._client = redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._fallback = MemoryReplayGuard()
        self._down_until = 0.0

    def _down(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:  # once per outage window
            log.warning("replay guard: Redis unavailable (%s); remembering signatures "
                        "per process for %.0f s", type(exc).__name__,
                        RETRY_REDIS_AFTER_SECONDS)
        self._down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        if time.monotonic() >= self._down_until:
            try:
                return bool(await self._client.set(
                    KEY_PREFIX + key, b"1", nx=True,
                    px=max(1, math.ceil(ttl_seconds * 1000))))
            except self._errors as exc:
                self._down(exc)
        return self._fallback.add(key, ttl_seconds)

    async def release(self, key: str) -> None:
        self._fallback.discard(key)
        try:
            await self._client.delete(KEY_PREFIX + key)
        except self._errors as exc:
            self._down(exc)

    async def aclose(self) -> None:
        await self._client.aclose()


def default_replay_guard(settings: Settings) -> ReplayGuard | None:
    """Redis-backed for the service, in-process for ``serve --embedded``; None when
    IDCARD_SDK_REPLAY_PROTECTION is off."""
    if not settings.sdk_replay_protection:
        return None
    if settings.embedded:
        return MemoryReplayGuard()
    return RedisReplayGuard(settings.redis_url)
