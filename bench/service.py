"""The service as deployed, measured: API submit throughput, queue overhead, worker scaling.

    python bench/service.py            # full run (about 5-8 minutes on 2 cores)
    python bench/service.py --quick    # small run (about 2 minutes)

Sets everything up itself and tears it down again, even on an error or Ctrl-C:

- a throwaway PostgreSQL database ``idcard_bench_<random>`` (dropped at the end) on the
  server of IDCARD_TEST_POSTGRES_URL, else 127.0.0.1:5432 as ``postgres`` or ``root``;
- a Redis database claimed as the integration tests claim theirs (same claim key and
  candidate numbers, so a test run and a bench run never share one), emptied at the end;
- ``idcard-ocr migrate`` and ``idcard-ocr projects create``; ``idcard-ocr serve`` (uvicorn)
  and ``idcard-ocr worker`` processes, each in a process group of its own.

Then, on ~200 KB synthetic card photos (``synthcard``, re-encoded as JPEG to the size):

a) submit: N async job submissions from K concurrent loopback requests, with no
   worker running: requests/s and latency of the API + PostgreSQL + broker path.
b) idle overhead: one idle worker process (``--concurrency 1``); jobs one at a time:
   submit -> ``started_at`` of async jobs, and the sync route's end-to-end latency
   minus the engine's own time. The engine time of every job is measured inside the
   worker (a timing wrapper around the engine call, see ``_worker_shim``). Goal: p50
   under 30 ms.
c) scaling: the same M bulk jobs with 1 and with 2 worker processes (``-c 1`` each,
   IDCARD_OCR_THREADS=1): jobs/s from the first submit to the last finished job.
d) isolation: one interactive and one bulk worker process (``-c 1``, 1 OCR thread
   each, as docker-compose.yml separates them); the sync route's end-to-end latency with
   the bulk worker idle, then while a bulk backlog keeps it busy. Goal (issue 6): p50
   under load within 20 % of idle.

Progress goes to stderr, one JSON summary to stdout (``--out`` also writes it to a
file). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The worker shim writes one JSON line per engine call to this file.
ENGINE_LOG_ENV = "BENCH_SERVICE_ENGINE_LOG"
SHIM_COMMAND = "_worker"

# The integration tests' Redis claim (tests/integration/worker_support.py), reimplemented
# because that helper reports failures with pytest.skip: same key, same databases.
REDIS_BASE = "redis://127.0.0.1:6379"
REDIS_DBS = (8, 9, 10, 11, 12, 13)  # the tests try 13 first; we start at the other end
REDIS_CLAIM_KEY = "idcard-test:claimed-by"
PG_DEFAULTS = ("postgresql://postgres@127.0.0.1:5432/test",
               "postgresql://root@127.0.0.1:5432/test")
QUEUE_KEYS_PRIORITY_STEPS = ("", "\x06\x163", "\x06\x166", "\x06\x169")
TERMINAL = ("succeeded", "failed", "cancelled")
OVERHEAD_GOAL_MS = 30.0
# Issue 6: interactive latency under a saturating bulk run, at most this times idle.
ISOLATION_GOAL_RATIO = 1.2
BENCH_RATE_LIMIT = 100_000_000  # requests per minute of the bench's project


@dataclass(frozen=True)
class Plan:
    submit_concurrency: tuple[int, ...]  # a) K of each load level; the first is headline
    submit_count: int  # a) at most this many submissions per level...
    submit_seconds: float  # ...for at most this long
    submit_warmup: int
    idle_samples: int  # b) async and sync samples each
    scale_jobs: int  # c) M
    isolation_samples: int  # d) sync samples idle and again under bulk load (0: skip)


QUICK = Plan(submit_concurrency=(16,), submit_count=400, submit_seconds=15,
             submit_warmup=20, idle_samples=8, scale_jobs=16, isolation_samples=8)
FULL = Plan(submit_concurrency=(16, 4), submit_count=3000, submit_seconds=30,
            submit_warmup=50, idle_samples=60, scale_jobs=80, isolation_samples=20)

_T0 = time.monotonic()


def say(msg: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - _T0:6.1f}s] {msg}\n")
    sys.stderr.flush()


# --- statistics --------------------------------------------------------------------------


def stats_ms(values: list[float], qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, Any]:
    """n, percentiles (linear interpolation), mean, min, max of millisecond values."""
    import numpy as np

    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=float)
    out: dict[str, Any] = {"n": int(arr.size)}
    for q in qs:
        out[f"p{q}"] = round(float(np.percentile(arr, q)), 2)
    out.update(mean=round(float(arr.mean()), 2), min=round(float(arr.min()), 2),
               max=round(float(arr.max()), 2))
    return out


def parse_ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- CPU accounting from /proc ---------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_rows() -> list[tuple[int, str, int, float]]:
    """(pid, comm, process group, cpu seconds) of every process we can read."""
    rows = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return rows
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        close = raw.rfind(b")")
        comm = raw[raw.find(b"(") + 1:close].decode(errors="replace")
        fields = raw[close + 2:].split()
        try:
            # utime + stime, plus cutime + cstime: the children it has reaped (a
            # PostgreSQL backend that exited, a replaced pool process) count for it.
            rows.append((int(name), comm, int(fields[2]),
                         sum(int(x) for x in fields[11:15]) / _CLK))
        except (IndexError, ValueError):
            continue
    return rows


def _machine_jiffies() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    total = sum(parts[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuMeter:
    """CPU seconds spent by the API, the workers, PostgreSQL, Redis and this process
    during a phase, and the machine's busy share. PostgreSQL and Redis are counted
    machine-wide (their other users too); backends that exit mid-phase are lost."""

    groups: Callable[[], dict[str, set[int]]]  # name -> process group ids
    _start: dict[str, Any] = field(default_factory=dict)

    def _snapshot(self) -> dict[str, Any]:
        groups = self.groups()
        cpu = Counter()
        for _pid, comm, pgrp, seconds in _proc_rows():
            for gname, pgids in groups.items():
                if pgrp in pgids:
                    cpu[gname] += seconds
            if comm.startswith("postgres"):
                cpu["postgres"] += seconds
            elif comm.startswith("redis-server"):
                cpu["redis"] += seconds
        t = os.times()
        cpu["bench_client"] = t.user + t.system
        busy, total = _machine_jiffies()
        return {"cpu": cpu, "busy": busy, "total": total, "wall": time.monotonic(),
                "load": os.getloadavg()}

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, Any]:
        end = self._snapshot()
        start = self._start
        wall = end["wall"] - start["wall"]
        cpu = {k: round(end["cpu"].get(k, 0.0) - start["cpu"].get(k, 0.0), 2)
               for k in sorted(set(end["cpu"]) | set(start["cpu"]))}
        dt = end["total"] - start["total"]
        busy = (end["busy"] - start["busy"]) / dt if dt > 0 else None
        return {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": cpu,
            "machine_busy_fraction": round(busy, 3) if busy is not None else None,
            "loadavg_start": [round(x, 2) for x in start["load"]],
            "loadavg_end": [round(x, 2) for x in end["load"]],
        }


# --- throwaway services ------------------------------------------------------------------


@contextmanager
def claimed_redis_db(fixed: str | None) -> Iterator[str]:
    """An empty Redis database for this run, its URL; emptied again at the end.

    ``fixed`` names one outright (it is flushed first); otherwise the first free one of
    REDIS_DBS is claimed with the integration tests' key (expires on its own should this
    process die) and leftovers of an earlier run are deleted, as the tests do.
    """
    import redis

    candidates = [fixed] if fixed else [f"{REDIS_BASE}/{n}" for n in REDIS_DBS]
    token = f"bench-{os.getpid()}-{time.time()}"
    for url in candidates:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            if fixed:
                client.flushdb()
            elif not client.set(REDIS_CLAIM_KEY, token, nx=True, ex=1800):
                client.close()
                continue
            for key in client.scan_iter(count=500):
                if key != REDIS_CLAIM_KEY.encode():
                    client.delete(key)
        except Exception as exc:
            client.close()
            raise SystemExit(f"bench: Redis unusable at {url} ({type(exc).__name__}: {exc})"
                             ) from None
        try:
            yield url
        finally:
            try:
                client.flushdb()
                say(f"Redis {url} emptied and released")
            finally:
                client.close()
        return
    raise SystemExit(f"bench: no free Redis database among {REDIS_DBS}")


def postgres_admin_url(explicit: str | None) -> str:
    from sqlalchemy import create_engine, text

    from idcard.db import normalize_url

    env = os.environ.get("IDCARD_TEST_POSTGRES_URL")
    candidates = [explicit] if explicit else ([env] if env else list(PG_DEFAULTS))
    errors = []
    for url in candidates:
        engine = create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as exc:
            errors.append(f"{url}: {type(exc).__name__}")
        finally:
            engine.dispose()
    raise SystemExit("bench: PostgreSQL unreachable (" + "; ".join(errors) + ")")


@contextmanager
def throwaway_postgres(admin_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from idcard.db import normalize_url

    name = f"idcard_bench_{secrets.token_hex(6)}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    say(f"created database {name}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            say(f"dropped database {name}")
        finally:
            admin.dispose()


# --- child processes ---------------------------------------------------------------------


def _share_precedence(pid: int) -> None:
    """Give a child the bench's own CPU precedence, if it was given one.

    With Linux's autogroup scheduling a new session (``start_new_session``) starts a
    scheduling group of its own at nice 0, whatever the bench's: the service would lose
    the precedence that the bench was run with (``echo -15 > /proc/$$/autogroup`` in
    its shell, see the Results below) to whatever else runs on the machine."""
    try:
        mine = Path("/proc/self/autogroup").read_text().split("nice")[1].strip()
        if int(mine) < 0:
            Path(f"/proc/{pid}/autogroup").write_text(mine)
    except (OSError, IndexError, ValueError):
        pass  # no autogroup (or not allowed): nothing to share


@dataclass
class Proc:
    """A child in a session (process group) of its own, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: Any = None

    def start(self) -> Proc:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _share_precedence(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def signal_term(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Celery finishes the running job, uvicorn drains), then SIGKILL the
        whole group, stragglers (pool children) included."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None


class Children:
    """Every child process started; all stopped on close (SIGTERMs overlap)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def stop(self, procs: list[Proc]) -> None:
        for p in procs:
            p.signal_term()
        for p in procs:
            p.stop()
            if p in self.procs:
                self.procs.remove(p)

    def close(self) -> None:
        if self.procs:
            say(f"stopping {len(self.procs)} child process(es)")
        self.stop(list(self.procs))

    def pgids(self, prefix: str) -> set[int]:
        return {p.pid for p in self.procs if p.name.startswith(prefix) and p.proc}


def wait_for(check: Callable[[], Any], timeout: float, what: str, *,
             proc: Proc | None = None, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n"
                               f"{proc.log_text()}")
        if time.monotonic() > deadline:
            tail = f":\n{proc.log_text()}" if proc is not None else ""
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(interval)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(args: list[str], env: dict[str, str]) -> str:
    r = subprocess.run([sys.executable, "-m", "idcard.cli", *args], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"idcard-ocr {' '.join(args)} failed ({r.returncode}):\n"
                           f"{r.stderr[-3000:]}")
    return r.stdout


def start_api(children: Children, env: dict[str, str], logs: Path,
              log_level: str) -> tuple[Proc, str]:
    import httpx

    port = free_port()
    api = children.add(Proc("api", [sys.executable, "-m", "idcard.cli", "serve", "--host",
                                    "127.0.0.1", "--port", str(port), "--log-level",
                                    log_level], env, logs / "api.log"))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "the API to be ready", proc=api, interval=0.2)
    return api, base


def start_workers(children: Children, env: dict[str, str], logs: Path, *, count: int,
                  queues: str, tag: str, threads: str | None, hook: bool) -> list[Proc]:
    """``count`` worker processes of ``--concurrency 1``; returns once each has loaded its
    OCR models and Celery says it is ready."""
    env = dict(env)
    if threads is None:
        env.pop("IDCARD_OCR_THREADS", None)
    else:
        env["IDCARD_OCR_THREADS"] = threads
    procs = []
    for i in range(count):
        name = f"worker-{tag}-{i}"
        head = ([sys.executable, str(Path(__file__).resolve()), SHIM_COMMAND] if hook
                else [sys.executable, "-m", "idcard.cli", "worker"])
        argv = [*head, f"--queues={queues}", "--concurrency=1", "--loglevel=info",
                f"--hostname={name}@bench"]
        procs.append(children.add(Proc(name, argv, env, logs / f"{name}.log")))
    for p in procs:
        wait_for(lambda p=p: ("OCR models loaded" in p.log_text(200000)
                              and " ready." in p.log_text(200000)),
                 120, f"{p.name} to load its models", proc=p, interval=0.2)
    return procs


# --- the worker shim ---------------------------------------------------------------------


def _worker_shim(argv: list[str]) -> int:
    """``idcard-ocr worker ARGS`` with a timing wrapper around the engine call.

    The wrapper is installed before Celery forks its pool, so the pool processes inherit
    it. It appends ``{"job_id", "pid", "start", "end", "engine_ms"}`` per call to the file
    named by BENCH_SERVICE_ENGINE_LOG (O_APPEND: one write per line), and two Celery
    signals add when the message left Redis (``received``, main process) and when the
    pool process began the task (``prerun``); ``notified`` is when the worker, its last
    transaction committed, publishes the job's end (``notify_done``). Without that
    variable, or if ``worker.jobrunner`` no longer has the functions wrapped, the worker
    runs unchanged.
    """
    path = os.environ.get(ENGINE_LOG_ENV)

    def write(record: dict[str, Any]) -> None:
        assert path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)

    try:
        import worker.jobrunner as jobrunner

        real_process = jobrunner._process
        real_recognize = jobrunner._recognize
        real_notify = jobrunner.notify_done
    except (ImportError, AttributeError) as exc:
        sys.stderr.write(f"bench shim: engine timing unavailable ({exc})\n")
        path = None
    if path:
        current: dict[str, str | None] = {"job": None}

        def process(job_id: str, *args: Any) -> Any:
            current["job"] = job_id
            try:
                return real_process(job_id, *args)
            finally:
                current["job"] = None

        def recognize(image: bytes, options: Any) -> Any:
            start = time.time()
            p0 = time.perf_counter()
            try:
                return real_recognize(image, options)
            finally:
                write({"kind": "engine", "job_id": current["job"], "pid": os.getpid(),
                       "start": start, "end": time.time(),
                       "engine_ms": (time.perf_counter() - p0) * 1000})

        def notify_done(job_id: str, status: str) -> None:
            # The job's final transaction is committed: the completion signal goes out.
            write({"kind": "notified", "job_id": job_id, "t": time.time()})
            real_notify(job_id, status)

        jobrunner._process = process
        jobrunner._recognize = recognize
        jobrunner.notify_done = notify_done

        from celery import signals

        def received(request: Any = None, **_: Any) -> None:
            # In the worker's main process: the message came out of Redis.
            args = getattr(request, "args", None) or [None]
            write({"kind": "received", "job_id": args[0], "t": time.time()})

        def prerun(args: Any = None, **_: Any) -> None:
            # In the pool process: the task is about to run.
            write({"kind": "prerun", "job_id": (args or [None])[0], "t": time.time()})

        signals.task_received.connect(received, weak=False)
        signals.task_prerun.connect(prerun, weak=False)
    from idcard.cli import main

    return main(["worker", *argv])


class EngineLog:
    """The shim's records, by job id: ``engine`` (default), ``received``, ``prerun``,
    ``notified``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self, kind: str = "engine") -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            text = self.path.read_text()
        except OSError:
            return out
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("job_id") and rec.get("kind", "engine") == kind:
                out[rec["job_id"]] = rec
        return out


# --- photos --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    seed: int
    preset: str
    side: str
    data: bytes
    quality: int
    width: int
    height: int
    expected: dict[str, Any]


def _jpeg(img: Any, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_near(img: Any, target: int) -> tuple[bytes, int, Any]:
    """A JPEG of ``img`` within ~8% of ``target`` bytes: the quality is searched, and
    the photo scaled when no quality gets there. (bytes, quality, image used)."""
    import cv2

    for _ in range(4):
        lo, hi = 30, 97
        best: tuple[bytes, int] | None = None
        while lo <= hi:
            q = (lo + hi) // 2
            data = _jpeg(img, q)
            if best is None or abs(len(data) - target) < abs(len(best[0]) - target):
                best = (data, q)
            if len(data) < target:
                lo = q + 1
            else:
                hi = q - 1
        assert best is not None
        if abs(len(best[0]) - target) <= 0.08 * target:
            return best[0], best[1], img
        # Too small at the best quality (or too big at the worst): scale the photo.
        factor = (target / len(best[0])) ** 0.5
        img = cv2.resize(img, None, fx=factor, fy=factor,
                         interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
    return best[0], best[1], img


def make_images(count: int, seed: int, target_kb: int) -> list[Image]:
    from synthcard import make_photo

    images = []
    for i in range(count):
        preset = ("clean", "mild")[i % 2]
        side = ("front", "back")[(i // 2) % 2]
        case = make_photo(seed + i, preset, side)
        data, quality, img = encode_near(case.image, target_kb * 1000)
        h, w = img.shape[:2]
        images.append(Image(seed + i, preset, side, data, quality, w, h, case.expected))
    return images


def body_bytes(image: Image, **extra: Any) -> bytes:
    return json.dumps({"image": base64.b64encode(image.data).decode(), **extra}).encode()


# --- a) submit throughput ------------------------------------------------------------------


async def _load(base: str, headers: dict[str, str], url: str, bodies: list[bytes], *,
                count: int, seconds: float, concurrency: int, warmup: int
                ) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60,
                                 limits=limits) as client:
        async def one(i: int) -> tuple[float, int | str]:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=bodies[i % len(bodies)])
                status: int | str = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            return (time.perf_counter() - t0) * 1000, status

        # Warm-up (connections, the API's database pool, code paths): not counted.
        sem = asyncio.Semaphore(concurrency)

        async def warm(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(warm(i) for i in range(warmup)))

        latencies: list[float] = []
        statuses: Counter = Counter()
        next_index = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def user() -> None:
            nonlocal next_index
            while next_index < count and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                ms, status = await one(i)
                statuses[status] += 1
                if status == 202:
                    latencies.append(ms)

        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    sent = sum(statuses.values())
    ok = statuses.get(202, 0)
    mean_body = sum(len(b) for b in bodies) / len(bodies)
    return {
        "requests": sent,
        "accepted_202": ok,
        "errors": {str(k): v for k, v in statuses.items() if k != 202},
        "seconds": round(elapsed, 2),
        "stopped_by": "count" if sent >= count else "time",
        "requests_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
        "request_body_kb": round(mean_body / 1000, 1),
        "upload_mb_per_s": round(ok * mean_body / elapsed / 1e6, 1) if elapsed > 0 else None,
        "latency_ms": stats_ms(latencies),
        "warmup_requests": warmup,
    }


# --- the bench -------------------------------------------------------------------------------


@dataclass
class Service:
    base: str
    project_id: str
    token: str
    db_url: str
    redis_url: str

    @property
    def jobs_url(self) -> str:
        return f"/v2/{self.project_id}/ocr/id-card/jobs"

    @property
    def sync_url(self) -> str:
        return f"/v2/{self.project_id}/ocr/id-card"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token, "Content-Type": "application/json"}


def clear_backlog(svc: Service, engine: Any) -> dict[str, Any]:
    """Drop the queued messages and the jobs of phase a) (the worker of b) must start on
    an empty queue); the database's size first, for the storage figure."""
    import redis
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from idcard.queues import ALL_QUEUES

    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        inputs = conn.execute(text("SELECT pg_total_relation_size('job_inputs')")).scalar()
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    client = redis.Redis.from_url(svc.redis_url)
    try:
        keys = [f"{q}{step}" for q in ALL_QUEUES for step in QUEUE_KEYS_PRIORITY_STEPS]
        client.delete(*keys)
    finally:
        client.close()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '20s'"))
        conn.execute(text("TRUNCATE job_events, webhook_deliveries, job_inputs, jobs, "
                          "batches CASCADE"))
    # Phase a) wrote about a gigabyte of WAL: without this, the checkpoint it triggers
    # keeps writing it back (spread over minutes) while phase b) measures commits that
    # wait for the disk on what is meant to be an idle machine.
    t0 = time.monotonic()
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("CHECKPOINT"))
        checkpoint: float | None = round(time.monotonic() - t0, 2)
    except SQLAlchemyError as exc:  # not a superuser (nor pg_checkpoint): go on without
        say(f"CHECKPOINT refused ({type(exc).__name__}): phase b) may see its write-back")
        checkpoint = None
    return {"jobs": int(jobs), "database_mb": round(size / 1e6, 1),
            "job_inputs_bytes_per_job": int(inputs / jobs) if jobs else None,
            "checkpoint_seconds": checkpoint}


def pg_sessions(engine: Any) -> int | None:
    """Connections ever opened to the bench database (PostgreSQL 14+)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT sessions FROM pg_stat_database "
                                     "WHERE datname = current_database()")).scalar()
    except SQLAlchemyError:
        return None


def phase_submit(svc: Service, images: list[Image], plan: Plan, concurrency: int,
                 meter: CpuMeter, engine: Any) -> dict[str, Any]:
    bodies = [body_bytes(img) for img in images]
    say(f"a) submit: up to {plan.submit_count} async jobs in {plan.submit_seconds:g} s, "
        f"{concurrency} concurrent, no worker running")
    meter.start()
    sessions0 = pg_sessions(engine)
    result = asyncio.run(_load(svc.base, svc.headers, svc.jobs_url, bodies,
                               count=plan.submit_count, seconds=plan.submit_seconds,
                               concurrency=concurrency, warmup=plan.submit_warmup))
    sessions1 = pg_sessions(engine)
    usage = meter.stop()
    ok = max(result["accepted_202"], 1)
    usage["cpu_ms_per_request"] = {k: round(v * 1000 / ok, 2)
                                   for k, v in usage["cpu_seconds"].items()}
    result["concurrency"] = concurrency
    # The API's pool keeps 5 connections and opens up to 10 more, closing each of those
    # when it is returned: new connections per request show that churn (warm-up
    # included; the bench's own two queries also count).
    result["postgres_connections_opened_per_request"] = (
        round((sessions1 - sessions0) / (ok + plan.submit_warmup), 3)
        if sessions0 is not None and sessions1 is not None else None)
    result["resources"] = usage
    say(f"a) {result['requests_per_s']} req/s, p50 {result['latency_ms'].get('p50')} ms, "
        f"p99 {result['latency_ms'].get('p99')} ms, errors {result['errors']}")
    return result


class JobWaiter:
    """Waits for a job's end on its Redis done channel (as the sync route does), with a
    fallback poll of the API; no polling load while the worker runs."""

    def __init__(self, svc: Service, http: Any) -> None:
        import redis

        self.svc = svc
        self.http = http
        self.redis = redis.Redis.from_url(svc.redis_url, socket_timeout=5)

    def view(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"{self.svc.jobs_url}/{job_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        from idcard.queues import done_channel

        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(done_channel(job_id))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                view = self.view(job_id)
                if view["status"] in TERMINAL:
                    return view
                msg = pubsub.get_message(timeout=1.0)
                if msg is not None and msg.get("type") == "message":
                    return self.view(job_id)
            raise RuntimeError(f"job {job_id} did not end within {timeout:g} s")
        finally:
            pubsub.close()

    def close(self) -> None:
        self.redis.close()


def phase_idle(svc: Service, images: list[Image], samples: int, engine_log: EngineLog,
               gap: float, meter: CpuMeter) -> dict[str, Any]:
    import httpx

    async_bodies = [body_bytes(img) for img in images]
    sync_bodies = async_bodies  # the sync route takes the same body
    async_rows: list[dict[str, float | None]] = []
    sync_rows: list[dict[str, float | None]] = []
    sync_status: Counter = Counter()
    sync_match = 0
    warmup = 2
    with httpx.Client(base_url=svc.base, headers=svc.headers, timeout=120) as http:
        waiter = JobWaiter(svc, http)
        meter.start()
        try:
            for i in range(samples + warmup):
                counted = i >= warmup
                k = i % len(images)
                # Async: submit, then the job's own timestamps.
                time.sleep(gap)
                t0 = time.time()
                p0 = time.perf_counter()
                r = http.post(svc.jobs_url, content=async_bodies[k])
                submit_ms = (time.perf_counter() - p0) * 1000
                if r.status_code != 202:
                    raise RuntimeError(f"submit answered {r.status_code}: {r.text[:300]}")
                job_id = r.json()["job_id"]
                view = waiter.wait(job_id)
                rec = engine_log.records().get(job_id)
                got = engine_log.records("received").get(job_id)
                pre = engine_log.records("prerun").get(job_id)
                events = http.get(f"{svc.jobs_url}/{job_id}/events").json()["events"]
                enq = next((parse_ts(e["at"]) for e in events if e["event"] == "enqueued"),
                           None)
                created, started = parse_ts(view["created_at"]), parse_ts(view["started_at"])

                def ms(a: float | None, b: float | None) -> float | None:
                    return (b - a) * 1000 if a is not None and b is not None else None

                if counted and started is not None:
                    async_rows.append({
                        "submit_response_ms": submit_ms,
                        "submit_to_started_ms": ms(t0, started),
                        "created_to_started_ms": ms(created, started),
                        "request_to_created_ms": ms(t0, created),
                        "created_to_enqueued_ms": ms(created, enq),
                        "enqueued_to_received_ms": ms(enq, got and got["t"]),
                        "received_to_prerun_ms": ms(got and got["t"], pre and pre["t"]),
                        "prerun_to_started_ms": ms(pre and pre["t"], started),
                        "started_to_engine_ms": ms(started, rec and rec["start"]),
                    })
                # Sync: end to end, minus the engine's own time of that very job.
                time.sleep(gap)
                before = set(engine_log.records())
                t0 = time.time()
                p0 = time.perf_counter()
                r = http.post(svc.sync_url, content=sync_bodies[k])
                e2e_ms = (time.perf_counter() - p0) * 1000
                t1 = t0 + e2e_ms / 1000
                recs = engine_log.records()
                new = [recs[j] for j in recs if j not in before]
                rec = max(new, key=lambda x: x["start"]) if new else None
                note = (engine_log.records("notified").get(rec["job_id"]) if rec else None)
                if rec is not None:
                    view = waiter.view(rec["job_id"])
                else:  # no engine timing: the newest job is this one (one at a time)
                    listing = http.get(svc.jobs_url, params={"limit": 1}).json()
                    view = listing["jobs"][0]
                if not counted:
                    continue
                sync_status[r.status_code] += 1
                if r.status_code == 200 and r.json() == {"result": images[k].expected}:
                    sync_match += 1
                created = parse_ts(view["created_at"])
                started = parse_ts(view["started_at"])
                finished = parse_ts(view["finished_at"])
                running_ms = ((finished - started) * 1000 if started and finished else None)
                row = {
                    "e2e_ms": e2e_ms,
                    "engine_ms": rec["engine_ms"] if rec else None,
                    "overhead_ms": e2e_ms - rec["engine_ms"] if rec else None,
                    "overhead_outside_running_ms": e2e_ms - running_ms
                    if running_ms is not None else None,
                    "request_to_created_ms": (created - t0) * 1000 if created else None,
                    "created_to_started_ms": (started - created) * 1000
                    if created and started else None,
                    "started_to_engine_ms": (rec["start"] - started) * 1000
                    if rec and started else None,
                    "engine_to_finished_ms": (finished - rec["end"]) * 1000
                    if rec and finished else None,
                    "finished_to_response_ms": (t1 - finished) * 1000 if finished else None,
                    "finished_to_notified_ms": (note["t"] - finished) * 1000
                    if note and finished else None,
                    "notified_to_response_ms": (t1 - note["t"]) * 1000 if note else None,
                }
                sync_rows.append(row)
        finally:
            waiter.close()
        usage = meter.stop()

    def col(rows: list[dict[str, float | None]], key: str) -> dict[str, Any]:
        return stats_ms([r[key] for r in rows if r.get(key) is not None], (50, 90))

    async_part = {k: col(async_rows, k) for k in (
        "submit_to_started_ms", "created_to_started_ms", "submit_response_ms",
        "request_to_created_ms", "created_to_enqueued_ms", "enqueued_to_received_ms",
        "received_to_prerun_ms", "prerun_to_started_ms", "started_to_engine_ms")}
    sync_part: dict[str, Any] = {k: col(sync_rows, k) for k in (
        "overhead_ms", "overhead_outside_running_ms", "e2e_ms", "engine_ms",
        "request_to_created_ms", "created_to_started_ms", "started_to_engine_ms",
        "engine_to_finished_ms", "finished_to_response_ms", "finished_to_notified_ms",
        "notified_to_response_ms")}
    sync_part["status"] = {str(k): v for k, v in sync_status.items()}
    sync_part["answers_equal_expected"] = sync_match
    sync_part["engine_time_source"] = ("worker shim (per job)"
                                       if any(r["engine_ms"] is not None for r in sync_rows)
                                       else "none: overhead_ms unavailable")
    out = {"samples": samples, "warmup": warmup, "gap_seconds": gap,
           "async": async_part, "sync": sync_part, "resources": usage}
    say(f"b) submit->started p50 {async_part['submit_to_started_ms'].get('p50')} ms; "
        f"sync overhead p50 {sync_part['overhead_ms'].get('p50')} ms "
        f"(e2e p50 {sync_part['e2e_ms'].get('p50')} ms)")
    return out


def _sync_latencies(svc: Service, http: Any, bodies: list[bytes], samples: int,
                    gap: float) -> list[float]:
    out = []
    for i in range(samples):
        time.sleep(gap)
        p0 = time.perf_counter()
        r = http.post(svc.sync_url, content=bodies[i % len(bodies)])
        if r.status_code != 200:
            raise RuntimeError(f"sync answered {r.status_code}: {r.text[:300]}")
        out.append((time.perf_counter() - p0) * 1000)
    return out


def phase_isolation(svc: Service, images: list[Image], samples: int, gap: float,
                    engine: Any, meter: CpuMeter) -> dict[str, Any]:
    """Sync (interactive) latency with the bulk worker idle, then while a bulk backlog
    keeps it busy the whole time; the interactive worker is the same in both."""
    import httpx
    from sqlalchemy import text

    sync_bodies = [body_bytes(img) for img in images]
    bulk_bodies = [body_bytes(img, priority="bulk") for img in images]
    with httpx.Client(base_url=svc.base, headers=svc.headers, timeout=120) as http:
        _sync_latencies(svc, http, sync_bodies, 2, gap)  # warm-up
        idle = _sync_latencies(svc, http, sync_bodies, samples, gap)
        # A backlog larger than the bulk worker can finish while the samples run.
        backlog = samples * 3 + 10
        for i in range(backlog):
            r = http.post(svc.jobs_url, content=bulk_bodies[i % len(bulk_bodies)])
            if r.status_code != 202:
                raise RuntimeError(f"bulk submit answered {r.status_code}")

        def bulk_waiting() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text(
                    "SELECT count(*) FROM jobs WHERE priority = 'bulk' "
                    "AND status IN ('queued', 'running')")).scalar_one())

        time.sleep(2.0)  # the bulk worker is busy from here on
        meter.start()
        loaded = _sync_latencies(svc, http, sync_bodies, samples, gap)
        usage = meter.stop()
        left = bulk_waiting()
    idle_p50 = stats_ms(idle, (50, 90))
    loaded_p50 = stats_ms(loaded, (50, 90))
    ratio = (loaded_p50["p50"] / idle_p50["p50"]) if idle_p50.get("p50") else None
    say(f"d) interactive e2e p50 idle {idle_p50.get('p50')} ms, under bulk load "
        f"{loaded_p50.get('p50')} ms (x{ratio and round(ratio, 3)}); "
        f"bulk jobs still waiting at the end: {left}")
    return {
        "samples": samples,
        "interactive_e2e_ms_idle": idle_p50,
        "interactive_e2e_ms_under_bulk": loaded_p50,
        "ratio_p50": round(ratio, 3) if ratio else None,
        "bulk_backlog_submitted": backlog,
        "bulk_jobs_still_waiting_after": left,
        "resources_under_bulk": usage,
    }


def phase_scale(svc: Service, images: list[Image], jobs: int, workers: list[Proc],
                engine: Any, engine_log: EngineLog, meter: CpuMeter) -> dict[str, Any]:
    import httpx
    from sqlalchemy import bindparam, text

    bodies = [body_bytes(img, priority="bulk") for img in images]
    meter.start()

    async def submit_all() -> tuple[list[str], float, float]:
        sem = asyncio.Semaphore(4)
        async with httpx.AsyncClient(base_url=svc.base, headers=svc.headers,
                                     timeout=60) as client:
            async def one(i: int) -> str:
                async with sem:
                    r = await client.post(svc.jobs_url, content=bodies[i % len(bodies)])
                    if r.status_code != 202:
                        raise RuntimeError(f"submit answered {r.status_code}: {r.text[:300]}")
                    return r.json()["job_id"]

            first = time.time()
            ids = await asyncio.gather(*(one(i) for i in range(jobs)))
            return list(ids), first, time.time()

    ids, first_submit, last_submit = asyncio.run(submit_all())
    query = text("SELECT id, status, created_at, started_at, finished_at, error_code "
                 "FROM jobs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))

    def rows() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(query, {"ids": ids}))

    def all_done() -> list[Any] | None:
        got = rows()
        return got if sum(r.status in TERMINAL for r in got) == len(ids) else None

    for p in workers:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited:\n{p.log_text()}")
    done = wait_for(all_done, max(120.0, jobs * 6.0), f"{jobs} bulk jobs", interval=0.2)
    usage = meter.stop()
    last_finished = max(r.finished_at.timestamp() for r in done)
    first_started = min(r.started_at.timestamp() for r in done if r.started_at)
    wall = last_finished - first_submit
    recs = engine_log.records()
    engine_ms = [recs[i]["engine_ms"] for i in ids if i in recs]
    per_pid = Counter(recs[i]["pid"] for i in ids if i in recs)
    mean_engine_s = sum(engine_ms) / len(engine_ms) / 1000 if engine_ms else None
    statuses = Counter(r.status for r in done)
    jps = jobs / wall if wall > 0 else None
    ideal = len(workers) / mean_engine_s if mean_engine_s else None
    return {
        "workers": len(workers),
        "jobs": jobs,
        "status": dict(statuses),
        "submit_seconds": round(last_submit - first_submit, 2),
        "wall_seconds": round(wall, 2),
        "jobs_per_s": round(jps, 3) if jps else None,
        "first_started_to_last_finished_s": round(last_finished - first_started, 2),
        "engine_ms_per_job": stats_ms(engine_ms, (50, 90)),
        "jobs_per_worker_process": sorted(per_pid.values(), reverse=True),
        # What the workers would do if they did nothing but run the engine back to back
        # at the speed they showed in this very phase.
        "engine_bound_jobs_per_s": round(ideal, 3) if ideal else None,
        "efficiency_vs_engine_bound": round(jps / ideal, 3) if jps and ideal else None,
        "resources": usage,
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def versions(svc: Service, engine: Any) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import redis
    from sqlalchemy import text

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("fastapi", "uvicorn", "celery", "kombu", "redis", "sqlalchemy",
                "psycopg2-binary", "httpx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    with engine.connect() as conn:
        out["postgresql_server"] = conn.execute(text("SHOW server_version")).scalar()
        out["postgresql_synchronous_commit"] = conn.execute(
            text("SHOW synchronous_commit")).scalar()
    client = redis.Redis.from_url(svc.redis_url)
    try:
        out["redis_server"] = client.info("server").get("redis_version")
    finally:
        client.close()
    return out


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    from sqlalchemy import create_engine

    from idcard.db import normalize_url

    plan = QUICK if args.quick else FULL
    plan = Plan(
        submit_concurrency=tuple(args.concurrency or plan.submit_concurrency),
        submit_count=args.submit_count or plan.submit_count,
        submit_seconds=args.submit_seconds or plan.submit_seconds,
        submit_warmup=plan.submit_warmup,
        idle_samples=args.idle_samples or plan.idle_samples,
        scale_jobs=args.scale_jobs or plan.scale_jobs,
        isolation_samples=(plan.isolation_samples if args.isolation_samples is None
                           else args.isolation_samples),
    )
    started_at = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    logs = Path(tempfile.mkdtemp(prefix="idcard-bench-service-"))
    stack.callback(lambda: None if args.keep_logs else shutil.rmtree(logs, True))
    say(f"logs in {logs}")

    say(f"generating {args.images} photos of ~{args.image_kb} KB")
    images = make_images(args.images, args.seed, args.image_kb)

    admin = postgres_admin_url(args.postgres_url)
    redis_url = stack.enter_context(claimed_redis_db(args.redis_url))
    say(f"Redis database {redis_url}")
    db_url = stack.enter_context(throwaway_postgres(admin))
    engine = create_engine(normalize_url(db_url), pool_size=2)
    stack.callback(engine.dispose)

    engine_log_path = logs / "engine.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCARD_")}
    env.update({
        "IDCARD_DATABASE_URL": db_url,
        "IDCARD_REDIS_URL": redis_url,
        "IDCARD_SECRET_KEY": secrets.token_urlsafe(32),
        "PYTHONUNBUFFERED": "1",
        ENGINE_LOG_ENV: str(engine_log_path),
    })
    say("idcard-ocr migrate; idcard-ocr projects create")
    run_cli(["migrate"], env)
    # A limit far above what this machine can send: the API's per-project rate limiter
    # (one Redis script per request) is on, as in production, but never refuses.
    creds = json.loads(run_cli(["projects", "create", "bench", "--rate-limit",
                                str(BENCH_RATE_LIMIT)], env))

    children = Children()
    stack.callback(children.close)
    api, base = start_api(children, env, logs, args.api_log_level)
    svc = Service(base, creds["project_id"], creds["token"], db_url, redis_url)
    engine_log = EngineLog(engine_log_path)
    hook = not args.no_engine_hook

    def groups() -> dict[str, set[int]]:
        return {"api": {api.pid}, "workers": children.pgids("worker-")}

    meter = CpuMeter(groups)
    summary: dict[str, Any] = {
        "benchmark": "bench/service.py",
        "mode": "quick" if args.quick else "full",
        "config": {
            "plan": vars(plan),
            "images": [{"seed": im.seed, "preset": im.preset, "side": im.side,
                        "jpeg_kb": round(len(im.data) / 1000, 1), "quality": im.quality,
                        "size": [im.width, im.height]} for im in images],
            "api": "idcard-ocr serve (one uvicorn process), log level "
                   + args.api_log_level,
            "project_rate_limit_per_minute": BENCH_RATE_LIMIT,
            "idle_worker_ocr_threads": args.idle_threads or "unset (onnxruntime default)",
            "scale_worker_ocr_threads": "1",
            "worker_command": ("idcard-ocr worker via bench shim (engine timing)" if hook
                               else "idcard-ocr worker"),
            "versions": versions(svc, engine),
            "git": git_state(),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "date_utc": started_at.isoformat(timespec="seconds"),
            "loadavg_start": [round(x, 2) for x in load_start],
        },
    }

    phases = set(args.phases)
    summary["config"]["phases"] = "".join(sorted(phases))
    # a) the API, PostgreSQL and the broker only.
    if "a" in phases:
        levels = [phase_submit(svc, images, plan, k, meter, engine)
                  for k in plan.submit_concurrency]
        summary["submit"] = levels[0]
        if len(levels) > 1:
            summary["submit_other_concurrency"] = {f"k{r['concurrency']}": r
                                                   for r in levels[1:]}
        summary["submit"]["storage"] = clear_backlog(svc, engine)

    # b) one idle worker, one job at a time.
    if "b" in phases:
        say("b) idle overhead: starting 1 worker (interactive, -c 1)")
        idle_workers = start_workers(children, env, logs, count=1, queues="interactive",
                                     tag="idle", threads=args.idle_threads, hook=hook)
        summary["idle_overhead"] = phase_idle(svc, images, plan.idle_samples, engine_log,
                                              args.gap, meter)
        children.stop(idle_workers)

    # c) the same bulk batch with 1 and 2 worker processes.
    if "c" in phases:
        scaling: dict[str, Any] = {}
        for n in (1, 2):
            say(f"c) scaling: starting {n} worker process(es) (bulk, -c 1, 1 OCR thread)")
            procs = start_workers(children, env, logs, count=n, queues="bulk",
                                  tag=f"bulk{n}", threads="1", hook=hook)
            time.sleep(1.0)  # let the start-up settle
            res = phase_scale(svc, images, plan.scale_jobs, procs, engine, engine_log,
                              meter)
            scaling[f"workers_{n}"] = res
            say(f"c) {n} worker(s): {res['jobs_per_s']} jobs/s "
                f"(engine-bound {res['engine_bound_jobs_per_s']})")
            children.stop(procs)
        j1 = scaling["workers_1"]["jobs_per_s"]
        j2 = scaling["workers_2"]["jobs_per_s"]
        scaling["scaling_ratio_2_over_1"] = round(j2 / j1, 3) if j1 and j2 else None
        summary["scaling"] = scaling

    # d) interactive latency while bulk work saturates its own worker.
    if plan.isolation_samples and "d" in phases:
        say("d) isolation: 1 interactive + 1 bulk worker (-c 1, 1 OCR thread each)")
        iso = (start_workers(children, env, logs, count=1, queues="interactive",
                             tag="iso-interactive", threads="1", hook=hook)
               + start_workers(children, env, logs, count=1, queues="bulk",
                               tag="iso-bulk", threads="1", hook=hook))
        summary["isolation"] = phase_isolation(svc, images, plan.isolation_samples,
                                               args.gap, engine, meter)
        children.stop(iso)

    summary["goals"] = {}
    if "idle_overhead" in summary:
        idle = summary["idle_overhead"]
        q50 = idle["async"]["submit_to_started_ms"].get("p50")
        s50 = idle["sync"]["overhead_ms"].get("p50")
        summary["goals"].update({
            "queue_overhead_p50_lt_30ms": q50 is not None and q50 < OVERHEAD_GOAL_MS,
            "sync_overhead_p50_lt_30ms": s50 is not None and s50 < OVERHEAD_GOAL_MS,
        })
    if "isolation" in summary:
        r = summary["isolation"]["ratio_p50"]
        summary["goals"]["interactive_p50_under_bulk_within_20pct"] = (
            r is not None and r <= ISOLATION_GOAL_RATIO)
    summary["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["machine"]["wall_seconds"] = round(time.monotonic() - _T0, 1)
    if args.keep_logs:
        summary["logs"] = str(logs)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/service.py",
        description="Benchmark the deployed service (API, PostgreSQL, Redis, Celery "
                    "workers) on this machine: submit throughput and latency, queue "
                    "overhead when idle, jobs/s with 1 and 2 worker processes. Creates "
                    "and drops its own database; claims and empties a Redis database.",
        epilog=f"Full plan: {vars(FULL)}. Quick plan: {vars(QUICK)}.")
    p.add_argument("--quick", action="store_true", help="a small run (about 2 minutes)")
    p.add_argument("--concurrency", type=_int_list, metavar="K[,K...]",
                   help="a) concurrent requests of the load generator, one load level "
                        "each; the first is the headline figure (default: 16 quick, "
                        "16,4 full)")
    p.add_argument("--submit-count", type=int, metavar="N",
                   help="a) at most N submissions (default by plan)")
    p.add_argument("--submit-seconds", type=float, metavar="S",
                   help="a) for at most S seconds (default by plan)")
    p.add_argument("--idle-samples", type=int, metavar="N",
                   help="b) async and sync samples, N of each (default by plan)")
    p.add_argument("--scale-jobs", type=int, metavar="M",
                   help="c) bulk jobs per worker count (default by plan)")
    p.add_argument("--isolation-samples", type=int, metavar="N",
                   help="d) sync samples idle and under bulk load (default by plan; "
                        "0 skips the phase)")
    p.add_argument("--phases", default="abcd", type=_phases, metavar="LETTERS",
                   help="which phases to run, e.g. 'b' for the idle overhead alone "
                        "(default abcd: all)")
    p.add_argument("--gap", type=float, default=0.3, metavar="S",
                   help="b) idle pause before each sample (default 0.3 s)")
    p.add_argument("--idle-threads", default=None, metavar="N",
                   help="b) IDCARD_OCR_THREADS of the idle worker (default: unset)")
    p.add_argument("--images", type=int, default=8, help="distinct photos (default 8)")
    p.add_argument("--image-kb", type=int, default=200,
                   help="JPEG size of each photo in KB (default 200)")
    p.add_argument("--seed", type=int, default=0, help="first synthcard seed (default 0)")
    p.add_argument("--api-log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="idcard-ocr serve --log-level (default warning: no access log)")
    p.add_argument("--no-engine-hook", action="store_true",
                   help="run the plain idcard-ocr worker; the sync overhead is then only "
                        "available against the job's running time")
    p.add_argument("--postgres-url", metavar="URL",
                   help="admin URL of the PostgreSQL server (default: "
                        "IDCARD_TEST_POSTGRES_URL, else 127.0.0.1:5432 as postgres/root)")
    p.add_argument("--redis-url", metavar="URL",
                   help="use (and FLUSH) this Redis database instead of claiming one")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the API and worker logs (their directory is printed)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON here")
    return p


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("at least one positive integer")
    return values


def _phases(text: str) -> str:
    letters = text.strip().lower()
    if not letters or set(letters) - set("abcd"):
        raise argparse.ArgumentTypeError("letters among a, b, c, d")
    return letters


def _interrupt(_signum: int, _frame: Any) -> None:
    # SIGTERM as Ctrl-C: through whatever SIGINT handler is current (asyncio.run has its
    # own, which cancels the load generator cleanly), else KeyboardInterrupt.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SHIM_COMMAND]:
        return _worker_shim(argv[1:])
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = ExitStack()
    code = 0
    try:
        summary = run(args, stack)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        code = 130
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        args.keep_logs = True  # the logs are what is left to look at
        code = 1
    finally:
        # Nothing may interrupt the clean-up: children, the database, Redis.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        except Exception as exc:  # noqa: BLE001 - report, but the exit code says it
            say(f"clean-up failed: {type(exc).__name__}: {exc}")
            code = code or 1
    if code:
        return code
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
