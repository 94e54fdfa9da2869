"""Soak under faults: many jobs through the deployed service while a worker is SIGKILLed
(and restarted) and Redis is restarted empty; then count what was lost or duplicated.

    python bench/soak.py                       # 5000 jobs, --image mixed
    python bench/soak.py --jobs 200            # a quick check
    python bench/soak.py --image card          # every job a real synthetic card

Sets up and tears down, even on an error or Ctrl-C:

- a private ``redis-server`` on a free port, keeping nothing on disk (as the shared one):
  its restart loses every queued message, so the database and the reconciler must
  bring those jobs back;
- a throwaway database ``idcard_bench_<random>`` on the shared PostgreSQL
  (IDCARD_TEST_POSTGRES_URL, else 127.0.0.1:5432 as postgres or root), or with
  ``--private-postgres`` a cluster of its own made by ``initdb``;
- ``idcard-ocr serve`` (uvicorn) and two Celery worker processes (``--concurrency 1``
  each, every queue; the first also runs beat, i.e. the reconciler);
- a local webhook receiver (every job has a ``callback_url``) that counts deliveries.

Jobs are submitted through the API by ``--submitters`` threads, each retrying a refused
submission (503 while Redis is down, connection errors) with the same Idempotency-Key, as
a careful client would. When ``--kill-worker-at`` of the jobs have ended, the first
worker is SIGKILLed (its whole process group, beat included) and started again
``--worker-down`` seconds later; at ``--restart-redis-at``, Redis is killed and started
again empty. The run ends when every accepted job has ended and its webhook has settled,
or when nothing has moved for ``--stall`` seconds.

Images (``--image``): ``tiny`` is a 1x1 PNG that every job fails at once with AIS.0103
(no OCR: it measures the machinery, queue, database, webhooks); ``card`` is a clean
synthetic front (~217 KB JPEG) that succeeds and costs ~0.7 s of CPU in the engine;
``mixed`` (default) sends a card every ``1/--card-fraction`` jobs and tiny ones
otherwise; a file path sends that file (any outcome accepted). The summary says which.

Prints progress on stderr and one JSON summary on stdout (``--out`` also writes it).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import queue
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.service import (  # noqa: E402
    postgres_admin_url,
    say,
    throwaway_postgres,
)
from idcard.models import TERMINAL_STATUSES  # noqa: E402
from idcard.queues import ALL_QUEUES  # noqa: E402

TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)


# --- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    kind: str
    b64: str
    expected: str | None  # the status every job with it must end in (None: any)
    description: str


def tiny_image() -> Image:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (1, 1), (255, 255, 255)).save(buf, "PNG")
    return Image("tiny", base64.b64encode(buf.getvalue()).decode(), "failed",
                 f"1x1 PNG ({len(buf.getvalue())} bytes): fails at once with AIS.0103, "
                 "no OCR")


def card_image() -> Image:
    from synthcard import make_photo

    data = make_photo(1, "clean", "front").image_bytes
    return Image("card", base64.b64encode(data).decode(), "succeeded",
                 f"synthetic clean front, seed 1 ({len(data)} bytes JPEG): succeeds, "
                 "~0.7 s of engine CPU")


def file_image(path: str) -> Image:
    data = Path(path).read_bytes()
    return Image("file", base64.b64encode(data).decode(), None,
                 f"{path} ({len(data)} bytes): any outcome accepted")


def plan_images(args: argparse.Namespace) -> list[Image]:
    """The image of job i is ``plan[i % len(plan)]``."""
    if args.image == "tiny":
        return [tiny_image()]
    if args.image == "card":
        return [card_image()]
    if args.image == "mixed":
        every = max(1, round(1 / args.card_fraction)) if args.card_fraction > 0 else 0
        if every == 0:
            return [tiny_image()]
        return [card_image(), *[tiny_image()] * (every - 1)]
    return [file_image(args.image)]


# --- the webhook receiver ------------------------------------------------------------------


class Receiver:
    """A local HTTP server that answers every webhook 200 and records it."""

    def __init__(self, secret: str) -> None:
        from tests.integration.worker_support import LocalServer, send

        self.secret = secret
        self.server = LocalServer()
        self.server.routes["/hook"] = lambda h: send(h, 200, b"ok")

    def url(self) -> str:
        return self.server.url("/hook")

    def counts(self) -> tuple[Counter[str], int]:
        """(deliveries per event id, deliveries with a bad signature)."""
        from idcard.webhooks import SIGNATURE_HEADER, verify

        by_event: Counter[str] = Counter()
        bad = 0
        for hit in list(self.server.received):
            by_event[json.loads(hit.body)["event_id"]] += 1
            bad += not verify(self.secret, hit.body, hit.headers.get(SIGNATURE_HEADER, ""),
                              tolerance=10**9)
        return by_event, bad


# --- submitting ----------------------------------------------------------------------------


@dataclass
class Submissions:
    accepted: dict[int, str] = field(default_factory=dict)  # index -> job id
    gave_up: list[int] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    first_at: float | None = None
    last_at: float | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submitting(self) -> bool:
        return any(t.is_alive() for t in self.threads)


def submit_all(base: str, token: str, pid: str, images: list[Image], callback: str,
               count: int, threads: int, give_up_after: float) -> Submissions:
    import httpx

    out = Submissions()
    todo: queue.Queue[int] = queue.Queue()
    for i in range(count):
        todo.put(i)

    def run() -> None:
        with httpx.Client(base_url=base, timeout=60,
                          headers={"X-Auth-Token": token}) as http:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                image = images[i % len(images)]
                body = {"image": image.b64, "callback_url": callback, "priority": "bulk",
                        "client_reference": f"soak-{i}"}
                headers = {"Idempotency-Key": f"soak-{i}"}
                start, delay = time.monotonic(), 0.2
                while True:
                    try:
                        r = http.post(f"/v2/{pid}/ocr/id-card/jobs", json=body,
                                      headers=headers)
                        cause = None if r.status_code == 202 else f"http {r.status_code}"
                    except httpx.HTTPError as exc:
                        cause = type(exc).__name__
                    if cause is None:
                        with out.lock:
                            out.accepted[i] = r.json()["job_id"]
                            now = time.monotonic()
                            out.first_at = out.first_at or now
                            out.last_at = now
                        break
                    with out.lock:
                        out.retries[cause] += 1
                    if time.monotonic() - start > give_up_after:
                        with out.lock:
                            out.gave_up.append(i)
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)

    out.threads = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in out.threads:
        t.start()
    return out


# --- reading the database ------------------------------------------------------------------


def status_counts(db_url: str, project_id: str) -> Counter[str]:
    from sqlalchemy import func, select

    from idcard.db import session_scope
    from idcard.models import Job

    with session_scope(db_url) as s:
        rows = s.execute(select(Job.status, func.count()).where(Job.project_id == project_id)
                         .group_by(Job.status)).all()
    return Counter({status: n for status, n in rows})


def webhooks_unsettled(db_url: str, project_id: str) -> int:
    from sqlalchemy import func, select

    from idcard.db import session_scope
    from idcard.models import Job

    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).select_from(Job).where(
            Job.project_id == project_id, Job.callback_url.is_not(None),
            Job.status.in_(("succeeded", "failed")),
            Job.webhook_state.is_distinct_from("delivered"),
            Job.webhook_state.is_distinct_from("failed"))) or 0


def queue_lengths(redis_url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return {q: int(client.llen(q)) for q in ALL_QUEUES} | {
            "unacked": int(client.hlen("unacked"))}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def final_report(db_url: str, project_id: str, subs: Submissions, images: list[Image],
                 receiver: Receiver) -> dict[str, Any]:
    from sqlalchemy import func, select

    from idcard.db import session_scope
    from idcard.models import Job, JobEvent
    from idcard.webhooks import event_id_for

    expected_of = {job_id: images[i % len(images)] for i, job_id in subs.accepted.items()}
    with session_scope(db_url) as s:
        jobs = {j.id: j for j in s.execute(
            select(Job.id, Job.status, Job.attempts, Job.error_code, Job.webhook_state)
            .where(Job.project_id == project_id)).all()}
        terminal_events = Counter(dict(s.execute(
            select(JobEvent.job_id, func.count()).where(
                JobEvent.project_id == project_id, JobEvent.event.in_(TERMINAL))
            .group_by(JobEvent.job_id)).all()))
        by_actor = Counter(dict(s.execute(
            select(JobEvent.event, func.count()).where(
                JobEvent.project_id == project_id,
                JobEvent.actor == "system:reconciler").group_by(JobEvent.event)).all()))
        retried = s.scalar(select(func.count(func.distinct(JobEvent.job_id))).where(
            JobEvent.project_id == project_id, JobEvent.event == "retried")) or 0

    accepted = set(subs.accepted.values())
    statuses = Counter(jobs[j].status if j in jobs else "missing" for j in accepted)
    unexpected = Counter()
    for job_id, image in expected_of.items():
        row = jobs.get(job_id)
        if row is not None and row.status in TERMINAL and image.expected is not None \
                and row.status != image.expected:
            unexpected[f"{image.kind}:{row.status}:{row.error_code}"] += 1
    ended = [j for j in accepted if j in jobs and jobs[j].status in ("succeeded", "failed")]
    received, bad = receiver.counts()
    delivered_once = sum(1 for j in ended
                         if received.get(event_id_for(j, f"job.{jobs[j].status}"), 0) >= 1)
    return {
        "jobs": len(accepted),
        "submissions_given_up": len(subs.gave_up),
        "succeeded": statuses["succeeded"],
        "failed": statuses["failed"],
        "cancelled": statuses["cancelled"],
        "lost": statuses["queued"] + statuses["missing"],
        "stuck": statuses["running"],
        "duplicates": sum(1 for j in accepted if terminal_events.get(j, 0) > 1),
        "unexpected_outcomes": dict(unexpected),
        "attempts": dict(sorted(Counter(jobs[j].attempts for j in accepted
                                        if j in jobs).items())),
        "restarted_jobs": retried,
        "reconciler": {"requeued": by_actor["enqueued"], "failed": by_actor["failed"]},
        "webhooks": {
            "ended_jobs": len(ended),
            "delivered_at_least_once": delivered_once,
            "never_received": len(ended) - delivered_once,
            "received": sum(received.values()),
            "duplicates_received": sum(n - 1 for n in received.values() if n > 1),
            "bad_signatures": bad,
            "state_in_database": dict(Counter(jobs[j].webhook_state for j in ended)),
        },
    }


# --- the run -------------------------------------------------------------------------------


@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if not args.private_postgres:
        with throwaway_postgres(postgres_admin_url(None)) as url:
            from idcard.migrate import upgrade

            upgrade(url)
            yield url
        return
    from tests.integration.fault_support import Unavailable, private_postgres

    try:
        with private_postgres() as cluster:
            say(f"private PostgreSQL cluster on port {cluster.port}")
            yield cluster.create_database(f"idcard_soak_{secrets.token_hex(3)}")
    except Unavailable as exc:
        raise SystemExit(f"soak: {exc}") from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from celery import Celery

    from idcard.db import dispose_engines, session_scope
    from idcard.projects import create_project
    from idcard.settings import get_settings
    from tests.integration.fault_support import PrivateRedis, Unavailable, service_env
    from tests.integration.live_server import free_port, serve_in_subprocess
    from tests.integration.worker_support import WorkerProcess, celery_worker

    images = plan_images(args)
    log_dir = Path(tempfile.mkdtemp(prefix="idcard-soak-"))
    say(f"logs in {log_dir}")
    faults: list[dict[str, Any]] = []
    workers: list[WorkerProcess] = []
    with ExitStack() as stack:
        try:
            redis_server = PrivateRedis(log_dir).start()
        except Unavailable as exc:
            raise SystemExit(f"soak: {exc}") from None
        stack.callback(redis_server.stop)
        say(f"private Redis on port {redis_server.port}")
        db_url = stack.enter_context(database(args))
        stack.callback(dispose_engines)
        env = service_env(db_url, redis_server.url(),
                          job_deadline_seconds=args.deadline, webhook_max_attempts=6,
                          webhook_backoff_base_seconds=0.5, webhook_timeout_seconds=5)
        os.environ.update({k: env[k] for k in ("IDCARD_DATABASE_URL", "IDCARD_SECRET_KEY")})
        get_settings.cache_clear()
        with session_scope(db_url) as s:
            creds = create_project(s, "soak")
        receiver = Receiver(creds["webhook_secret"])
        stack.enter_context(receiver.server)
        ping = Celery("soak-ping", broker=redis_server.url())
        stack.callback(ping.close)

        def start_worker(name: str, beat: bool) -> WorkerProcess:
            worker_env = {**env, "TMPDIR": str(log_dir)}  # beat's schedule file
            worker = celery_worker(f"{name}@localhost", ",".join(ALL_QUEUES), worker_env,
                                   log_dir, beat=beat)
            workers.append(worker)
            return worker.start()

        stack.callback(lambda: WorkerProcess.stop_all(workers))
        first, second = start_worker("soak-a", True), start_worker("soak-b", False)
        first.wait_ready(ping, timeout=120)
        second.wait_ready(ping, timeout=120)
        port = free_port()
        serve = [sys.executable, "-m", "idcard.cli", "serve", "--port", str(port),
                 "--log-level", "warning"]
        base = stack.enter_context(serve_in_subprocess(serve, env, port,
                                                       log_dir / "api.log"))
        say(f"API at {base}; 2 workers ready; submitting {args.jobs} jobs")

        t0 = time.monotonic()
        subs = submit_all(base, creds["token"], creds["project_id"], images,
                          receiver.url(), args.jobs, args.submitters, args.give_up)

        killed = restarted = False
        last_change, last_ended, last_report = time.monotonic(), -1, 0.0
        while True:
            counts = status_counts(db_url, creds["project_id"])
            ended = sum(counts[s] for s in TERMINAL)
            submitting = subs.submitting()
            now = time.monotonic()
            if ended != last_ended:
                last_ended, last_change = ended, now
            if now - last_report > 10:
                say(f"{len(subs.accepted)} accepted, {dict(counts)}")
                last_report = now
            if not killed and ended >= args.kill_worker_at * args.jobs:
                killed = True
                running = counts["running"]
                first.kill()
                say(f"SIGKILLed {first.name} ({running} job(s) running)")
                time.sleep(args.worker_down)
                first = start_worker(f"soak-a{len(workers)}", True)
                faults.append({"fault": "worker SIGKILL", "at_seconds": round(now - t0, 1),
                               "jobs_ended_before": ended, "jobs_running": running,
                               "restarted_after_seconds": args.worker_down})
            elif not restarted and ended >= args.restart_redis_at * args.jobs:
                restarted = True
                lengths = queue_lengths(redis_server.url())
                redis_server.restart()
                say(f"Redis restarted empty; it held {lengths}")
                faults.append({"fault": "Redis killed and restarted empty",
                               "at_seconds": round(now - t0, 1), "jobs_ended_before": ended,
                               "messages_lost": lengths})
            if not submitting and ended >= len(subs.accepted) and \
                    webhooks_unsettled(db_url, creds["project_id"]) == 0:
                break
            if now - last_change > args.stall:
                say(f"nothing moved for {args.stall:g} s: giving up waiting")
                break
            time.sleep(0.5)
        seconds = time.monotonic() - t0

        report = final_report(db_url, creds["project_id"], subs, images, receiver)
    kinds = Counter(images[i % len(images)].kind for i in range(args.jobs))
    return {
        **report,
        "seconds": round(seconds, 1),
        "submit_seconds": round((subs.last_at or t0) - (subs.first_at or t0), 1),
        "submit_retries": dict(subs.retries),
        "faults": faults,
        "images": {img.kind: {"jobs": kinds[img.kind], "expected": img.expected,
                              "what": img.description}
                   for img in {i.kind: i for i in images}.values()},
        "setup": {"workers": "2 x celery --concurrency 1, every queue; beat on the first",
                  "job_deadline_seconds": args.deadline,
                  "database": "private initdb cluster" if args.private_postgres
                  else "throwaway database on the shared PostgreSQL",
                  "redis": "private redis-server, --save '' --appendonly no",
                  "cpus": os.cpu_count(), "loadavg_end": [round(x, 2)
                                                          for x in os.getloadavg()]},
        "definitions": {
            "lost": "accepted (202) but never ended: still queued at the end, or missing",
            "stuck": "still running at the end",
            "duplicates": "jobs with more than one terminal transition in their audit trail",
            "unexpected_outcomes": "jobs that ended otherwise than their image must",
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--image", default="mixed",
                   help="tiny | card | mixed (default) | a path to an image file")
    p.add_argument("--card-fraction", type=float, default=0.1,
                   help="--image mixed: share of card jobs (default 0.1)")
    p.add_argument("--submitters", type=int, default=8, help="submitting threads")
    p.add_argument("--deadline", type=float, default=20.0,
                   help="IDCARD_JOB_DEADLINE_SECONDS of the workers (default 20)")
    p.add_argument("--kill-worker-at", type=float, default=0.2,
                   help="SIGKILL the first worker when this share of jobs has ended")
    p.add_argument("--worker-down", type=float, default=5.0,
                   help="seconds before the killed worker is started again")
    p.add_argument("--restart-redis-at", type=float, default=0.5,
                   help="restart Redis empty when this share of jobs has ended")
    p.add_argument("--give-up", type=float, default=300.0,
                   help="a client gives up one submission after retrying this long")
    p.add_argument("--stall", type=float, default=300.0,
                   help="stop waiting when no job has ended for this long")
    p.add_argument("--private-postgres", action="store_true",
                   help="a PostgreSQL cluster of its own (initdb) instead of the shared one")
    p.add_argument("--out", help="also write the JSON summary to this file")
    args = p.parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    ok = (summary["lost"] == summary["stuck"] == summary["duplicates"] == 0
          and not summary["unexpected_outcomes"]
          and summary["webhooks"]["never_received"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
