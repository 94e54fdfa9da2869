"""What replay protection adds to an AK/SK-signed request.

    python bench/auth.py [--requests 600] [--database-url URL] [--redis-url URL]

a) the replay guard alone: ``claim`` per call on Redis (``SET NX PX``, one round trip)
   and in memory (``--embedded``), plus the key and TTL computation;
b) end to end: signed ``GET /v2/{project}/ocr/id-card/jobs?limit=1`` through three
   apps on the same database, called in process (ASGI): the Redis guard, the memory
   guard, none (rate limit off on all); requests interleaved, each app going first in
   turn; the difference of the medians to "without" is the added latency.

Needs Redis (IDCARD_REDIS_URL or ``--redis-url``); the database defaults to a
temporary SQLite file. One JSON summary goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _stats_us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "p10_us": round(ordered[len(ordered) // 10] * 1e6, 1),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
    }


def bench_guards(redis_url: str, n: int) -> dict[str, Any]:
    from api import sdk_signature
    from api.replay import KEY_PREFIX, MemoryReplayGuard, RedisReplayGuard

    run = uuid.uuid4().hex[:8]
    auth = sdk_signature.SdkAuthorization("BENCHAK", ("host", "x-sdk-date"), "0" * 64)
    date = datetime.now(timezone.utc).strftime(sdk_signature.DATE_FORMAT)
    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    for _ in range(n):
        sdk_signature.replay_key(auth)
        sdk_signature.replay_ttl(date, now)
    key_us = (time.perf_counter() - t0) / n * 1e6

    out: dict[str, Any] = {"key_and_ttl_us": round(key_us, 2)}
    memory = MemoryReplayGuard()
    samples = []
    for i in range(n * 10):
        t = time.perf_counter()
        memory.add(f"{run}:{i}", 960.0)
        samples.append(time.perf_counter() - t)
    out["memory_claim"] = _stats_us(samples)

    async def redis_claims() -> list[float]:
        guard = RedisReplayGuard(redis_url)
        timings = []
        try:
            for i in range(n):
                t = time.perf_counter()
                assert await guard.claim(f"bench-{run}:{i}", 60.0)
                timings.append(time.perf_counter() - t)
            assert not await guard.claim(f"bench-{run}:0", 60.0)
        finally:
            await guard.aclose()
        return timings

    try:
        out["redis_claim"] = _stats_us(asyncio.run(redis_claims()))
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{KEY_PREFIX}bench-{run}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        client.close()
    return out


def _signed_get(base: str, path: str, query: str, ak: str, sk: str,
                nonce: str) -> tuple[str, dict[str, str]]:
    from api import sdk_signature as sig

    host = base.split("://", 1)[1]
    date = datetime.now(timezone.utc).strftime(sig.DATE_FORMAT)
    headers = {"host": [host], "x-bench-nonce": [nonce], "x-sdk-date": [date]}
    names = ("host", "x-bench-nonce", "x-sdk-date")
    canonical = sig.canonical_request("GET", path, query, headers, names,
                                      hashlib.sha256(b"").hexdigest())
    signature = sig.sign(sk, sig.string_to_sign(date, canonical))
    return f"{base}{path}?{query}", {
        "X-Bench-Nonce": nonce, "X-Sdk-Date": date,
        "Authorization": f"{sig.ALGORITHM} Access={ak}, SignedHeaders={';'.join(names)}, "
                         f"Signature={signature}",
    }


class TimedGuard:
    """A replay guard that records how long each ``claim`` takes."""

    def __init__(self, inner: Any, timings: list[float]) -> None:
        self.inner, self.timings = inner, timings

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        t = time.perf_counter()
        try:
            return await self.inner.claim(key, ttl_seconds)
        finally:
            self.timings.append(time.perf_counter() - t)

    async def release(self, key: str) -> None:
        await self.inner.release(key)


def bench_end_to_end(requests: int) -> dict[str, Any]:
    import httpx

    from api.app import create_app
    from api.dispatch import InProcessDispatcher
    from idcard.db import session_scope
    from idcard.migrate import upgrade
    from idcard.projects import create_project
    from idcard.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    with session_scope() as session:
        creds = create_project(session, "bench-auth")
    base_settings = settings.model_copy(update={"rate_limit_per_minute": 0})
    dispatcher = InProcessDispatcher(lambda _job_id: None)
    from api.replay import MemoryReplayGuard, RedisReplayGuard

    apps = {
        "redis_guard": create_app(base_settings, dispatcher),
        "memory_guard": create_app(base_settings, dispatcher),
        "without": create_app(base_settings.model_copy(
            update={"sdk_replay_protection": False}), dispatcher),
    }
    in_situ: dict[str, list[float]] = {"redis_guard": [], "memory_guard": []}
    path, query = f"/v2/{creds['project_id']}/ocr/id-card/jobs", "limit=1"
    samples: dict[str, list[float]] = {name: [] for name in apps}

    async def run() -> None:
        # Made here: the Redis client belongs to this event loop.
        apps["redis_guard"].state.replay_guard = TimedGuard(
            RedisReplayGuard(settings.redis_url), in_situ["redis_guard"])
        apps["memory_guard"].state.replay_guard = TimedGuard(  # as --embedded
            MemoryReplayGuard(), in_situ["memory_guard"])
        # In process (ASGI, no sockets): TCP timing noise would hide tens of µs.
        clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                           base_url="http://bench.local", timeout=30)
                   for name, app in apps.items()}
        try:
            order = list(apps)
            for i in range(requests + 20):  # the first 20 warm up
                for name in order:
                    url, headers = _signed_get("http://bench.local", path, query,
                                               creds["ak"], creds["sk"], f"{name}-{i}")
                    t = time.perf_counter()
                    r = await clients[name].get(url, headers=headers)
                    elapsed = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    if i >= 20:
                        samples[name].append(elapsed)
                order = order[1:] + order[:1]  # each app goes first in turn
                if i % 200 == 0:
                    say(f"end to end: {i}/{requests + 20}")
        finally:
            for client in clients.values():
                await client.aclose()

    try:
        asyncio.run(run())
    finally:
        dispatcher.close()
    out: dict[str, Any] = {name: _stats_us(values) for name, values in samples.items()}
    for name in ("redis_guard", "memory_guard"):
        for stat in ("p10", "p50", "mean"):
            out[name][f"added_{stat}_us"] = round(
                out[name][f"{stat}_us"] - out["without"][f"{stat}_us"], 1)
        # The claim as awaited inside the request (warm-up included): what the guard
        # adds, free of the noise of everything else a request does.
        out[name]["claim_in_request"] = _stats_us(in_situ[name])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600,
                        help="signed requests per server (default 600)")
    parser.add_argument("--claims", type=int, default=5000,
                        help="guard claims on Redis (x10 in memory; default 5000)")
    parser.add_argument("--database-url", default=None,
                        help="default: a temporary SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: IDCARD_REDIS_URL")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    os.environ["IDCARD_DATABASE_URL"] = (args.database_url
                                         or f"sqlite:///{Path(tmp.name) / 'bench.sqlite3'}")
    if args.redis_url:
        os.environ["IDCARD_REDIS_URL"] = args.redis_url
    os.environ.setdefault("IDCARD_SECRET_KEY", "bench-auth-secret-key-0123456789")
    os.environ.pop("IDCARD_EMBEDDED", None)
    from idcard.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    say("a) replay guard alone")
    summary: dict[str, Any] = {
        "database": settings.database_url.split(":", 1)[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "guard": bench_guards(settings.redis_url, args.claims),
    }
    say("b) end to end, signed GET with and without replay protection")
    summary["end_to_end"] = bench_end_to_end(args.requests)
    tmp.cleanup()
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
