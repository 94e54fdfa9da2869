"""``idcard-ocr``: the command line (contract section 4)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from idcard.errors import ErrorCode, ServiceError
from idcard.options import ALERTS, SIDES, RecognitionOptions

# CLI option → request flag. The request flags themselves live in idcard.options.
_RETURN_OPTIONS = {
    "verify": "return_verification",
    "text_location": "return_text_location",
    "portrait_image": "return_portrait_image",
    "portrait_location": "return_portrait_location",
    "adjusted_image": "return_adjusted_image",
}


def _detect_flags(spec: str | None) -> set[str]:
    if not spec:
        return set()
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return {f"detect_{a}" for a in ALERTS}
    unknown = [n for n in names if n not in ALERTS]
    if unknown:
        raise SystemExit(
            f"idcard-ocr: unknown alert(s) {', '.join(unknown)}; choose from all, "
            + ", ".join(ALERTS)
        )
    return {f"detect_{n}" for n in names}


def options_from_args(args: argparse.Namespace) -> RecognitionOptions:
    flags = {flag for opt, flag in _RETURN_OPTIONS.items() if getattr(args, opt)}
    flags |= _detect_flags(args.detect)
    return RecognitionOptions(side=args.side, flags=frozenset(flags))


def add_request_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--side", choices=SIDES, default=None,
                   help="card side; detected automatically when omitted")
    p.add_argument("--verify", action="store_true", help="return verification_result")
    p.add_argument("--text-location", action="store_true", help="return text_location")
    p.add_argument("--portrait-image", action="store_true", help="return portrait_image")
    p.add_argument("--portrait-location", action="store_true",
                   help="return portrait_location")
    p.add_argument("--adjusted-image", action="store_true", help="return adjusted_image")
    p.add_argument("--detect", metavar="ALERTS",
                   help="'all' or a comma-separated list of: " + ", ".join(ALERTS))


def recognize_file(path: Path, options: RecognitionOptions) -> tuple[dict, bool]:
    """(response body, ok) for one file; failures become the API's error body."""
    from worker.recognition.engine import recognize

    try:
        data = path.read_bytes()
    except OSError as exc:
        error = ServiceError(ErrorCode.FILE_UNREADABLE, f"cannot read file: {exc.strerror}")
        return error.to_body(), False
    try:
        return recognize(data, options), True
    except ServiceError as exc:
        return exc.to_body(), False


def cmd_recognize(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    paths = [Path(p) for p in args.images]
    ok_all = True
    if len(paths) == 1 and not args.jsonl:
        body, ok = recognize_file(paths[0], options)
        json.dump(body, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0 if ok else 1
    for path in paths:
        body, ok = recognize_file(path, options)
        ok_all &= ok
        sys.stdout.write(json.dumps({"file": str(path), "response": body}, ensure_ascii=False))
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0 if ok_all else 1


def cmd_batch(args: argparse.Namespace) -> int:
    from idcard.bulk import run_batch

    try:
        options = options_from_args(args)
    except SystemExit as exc:  # an unknown --detect alert: a usage error
        sys.stderr.write(f"{exc}\n")
        return 2
    return run_batch(args, options)


def _add_batch_command(sub: argparse._SubParsersAction) -> None:
    from idcard.bulk import add_batch_arguments

    p = sub.add_parser("batch", help="recognise a folder or a manifest of images, locally "
                       "or on a server; resumable")
    add_batch_arguments(p)
    add_request_options(p)
    p.set_defaults(func=cmd_batch)


def _service_error(exc: Exception) -> int:
    # Configuration and connection problems: one clear line, no stack trace.
    sys.stderr.write(f"idcard-ocr: {exc}\n")
    return 2


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from idcard.migrate import current_revision, upgrade

    try:
        upgrade(revision=args.revision)
        revision = current_revision()
    except (SQLAlchemyError, RuntimeError) as exc:
        return _service_error(exc)
    sys.stderr.write(f"idcard-ocr: database at revision {revision}\n")
    return 0


def cmd_projects_create(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from idcard.db import session_scope
    from idcard.projects import create_project

    try:
        with session_scope() as session:
            creds = create_project(session, args.name,
                                   rate_limit_per_minute=args.rate_limit)
    except (SQLAlchemyError, RuntimeError, ValueError) as exc:
        return _service_error(exc)
    # The only time the secrets are shown: they are stored hashed or encrypted.
    json.dump(creds, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


# idcard.projects.CREDENTIALS (a test checks they agree), spelt out here: importing
# that module for the parser would cost every command a third of a second.
CREDENTIAL_KINDS = ("token", "aksk", "webhook-secret")


def _credential_kinds(spec: str) -> list[str]:
    return list(CREDENTIAL_KINDS) if spec == "all" else [spec]


def cmd_projects_rotate(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy.exc import SQLAlchemyError

    from idcard.db import session_scope
    from idcard.projects import rotate_credentials

    grace = None if args.grace is None else timedelta(seconds=args.grace)
    try:
        with session_scope() as session:
            creds = rotate_credentials(session, args.project_id,
                                       _credential_kinds(args.credential), grace=grace)
    except (SQLAlchemyError, RuntimeError, ValueError, LookupError) as exc:
        return _service_error(exc)
    # As with create: shown once, stored hashed or encrypted.
    json.dump(creds, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_projects_revoke_previous(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from idcard.db import session_scope
    from idcard.projects import revoke_previous

    try:
        with session_scope() as session:
            revoke_previous(session, args.project_id, _credential_kinds(args.credential))
    except (SQLAlchemyError, RuntimeError, ValueError, LookupError) as exc:
        return _service_error(exc)
    sys.stderr.write(f"idcard-ocr: previous {args.credential} credential(s) of project "
                     f"{args.project_id} revoked\n")
    return 0


EMBEDDED_ACTOR = "worker:embedded"
_RECONCILE_EVERY_SECONDS = 60.0
_PURGE_EVERY_SECONDS = 600.0


def embedded_runner(stop: threading.Event) -> Callable[[str], str | None]:
    """``run(job_id) -> final status`` for ``serve --embedded``'s in-process dispatcher:
    the worker's job runner, with webhooks delivered from threads of their own."""
    from worker.delivery import deliver_until_done
    from worker.jobrunner import run_job

    def deliver(job_id: str, event_id: str) -> None:
        threading.Thread(target=deliver_until_done, args=(job_id, event_id),
                         kwargs={"actor": EMBEDDED_ACTOR, "stop": stop}, daemon=True,
                         name="idcard-webhook").start()

    def run(job_id: str) -> str | None:
        # No Redis here: the dispatcher's own events wake the waiters. One process runs
        # every job, so a job found 'running' was orphaned by a crash: restart it.
        outcome = run_job(job_id, EMBEDDED_ACTOR, notifier=lambda _job, _status: None,
                          restart=True)
        if outcome.webhook_event_id is not None:
            deliver(job_id, outcome.webhook_event_id)
        return outcome.status

    run.deliver = deliver  # type: ignore[attr-defined]  # for the maintenance loop
    return run


def _requeue_pending(dispatcher: Any) -> int:
    """No broker remembers jobs across a restart of the embedded mode: hand the jobs
    still queued in the database, and those a crash left running, to this process's
    pools."""
    from sqlalchemy import select

    from idcard.db import session_scope
    from idcard.jobs import queue_for, record_enqueued
    from idcard.models import Job, JobStatus

    with session_scope() as session:
        pending = session.execute(
            select(Job.id, Job.priority)
            .where(Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
            .order_by(Job.created_at)
        ).all()
        for job_id, priority in pending:
            queue = queue_for(priority)
            dispatcher.enqueue(job_id, queue)
            record_enqueued(session, job_id, EMBEDDED_ACTOR, queue)
    return len(pending)


def _embedded_maintenance(dispatcher: Any, run: Any, stop: threading.Event) -> None:
    """What Celery beat does for the service: the reconciler and retention purges."""
    from idcard.db import session_scope
    from idcard.jobs import purge_expired
    from worker.jobrunner import reconcile

    last_purge = 0.0
    while not stop.wait(_RECONCILE_EVERY_SECONDS):
        try:
            reconcile(dispatcher.enqueue, run.deliver, actor=EMBEDDED_ACTOR,
                      in_broker=dispatcher.pending_ids())
            if time.monotonic() - last_purge >= _PURGE_EVERY_SECONDS:
                with session_scope() as session:
                    purge_expired(session)
                last_purge = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - try again next round
            sys.stderr.write(f"idcard-ocr: maintenance failed ({type(exc).__name__})\n")


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from api.app import create_app
    from api.dispatch import InProcessDispatcher
    from idcard.settings import MissingSecretKeyError, get_settings

    if args.embedded:
        os.environ["IDCARD_EMBEDDED"] = "1"
        get_settings.cache_clear()
    settings = get_settings()
    dispatcher = None
    stop = threading.Event()
    try:
        settings.secret_keys  # noqa: B018 - fail now, not on the first request
        if args.embedded:
            from idcard.migrate import upgrade

            upgrade()
            run = embedded_runner(stop)
            dispatcher = InProcessDispatcher(run, interactive_threads=args.threads,
                                             bulk_threads=1)
            requeued = _requeue_pending(dispatcher)
            if requeued:
                sys.stderr.write(f"idcard-ocr: re-queued {requeued} pending job(s)\n")
            threading.Thread(target=_embedded_maintenance, args=(dispatcher, run, stop),
                             daemon=True, name="idcard-maintenance").start()
    except (MissingSecretKeyError, SQLAlchemyError, RuntimeError) as exc:
        return _service_error(exc)
    app = create_app(settings, dispatcher)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    proxy_headers=False)
    finally:
        stop.set()
        if dispatcher is not None:
            dispatcher.close()
    return 0


def _queue_list(spec: str) -> list[str]:
    from idcard.queues import ALL_QUEUES

    queues = [q.strip() for q in spec.split(",") if q.strip()]
    unknown = [q for q in queues if q not in ALL_QUEUES]
    if unknown or not queues:
        raise argparse.ArgumentTypeError(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(ALL_QUEUES))
    return queues


def cmd_worker(args: argparse.Namespace) -> int:
    from idcard.settings import get_settings

    try:
        _ = get_settings().secret_keys  # fail now, not on every job
    except RuntimeError as exc:
        return _service_error(exc)
    # With several processes, the app sets IDCARD_OCR_THREADS=1 unless it is set.
    from worker.celery_app import app

    # No mingle/gossip: they share revokes and cluster events, which we do not use, and
    # cost a second at startup plus chatter on the broker.
    argv = ["worker", f"--queues={','.join(args.queues)}", f"--loglevel={args.loglevel}",
            "--pool=prefork", "--without-mingle", "--without-gossip"]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    if args.beat:
        argv.append("--beat")
    # In this process, not a child: SIGTERM reaches Celery itself, which stops taking
    # messages, lets running jobs finish, and hands reserved messages back to Redis.
    code = app.start(argv)
    return int(code or 0)


def _grace_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return seconds


def _add_service_commands(sub: argparse._SubParsersAction) -> None:
    from idcard.queues import ALL_QUEUES

    p = sub.add_parser("worker", help="run a Celery worker (Redis broker, SQL database)")
    p.add_argument("--queues", type=_queue_list, default=list(ALL_QUEUES),
                   help="comma-separated queues to consume (default: all: "
                        + ",".join(ALL_QUEUES) + ")")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="worker processes (default: one per CPU)")
    p.add_argument("--loglevel", default="info",
                   choices=["debug", "info", "warning", "error", "critical"])
    p.add_argument("--hostname", "-n", default=None,
                   help="Celery node name (default celery@<host>)")
    p.add_argument("--beat", action="store_true",
                   help="also schedule the reconciler (every 60 s) and the retention purge "
                        "(every 10 min); run it on exactly one worker")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--embedded", action="store_true",
                   help="run the API and a worker in this process: SQLite by default, no "
                        "Redis, migrations applied on start (for a laptop)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="--embedded: recognition threads for interactive jobs (default 2; "
                        "bulk jobs have one thread of their own)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="apply the database migrations to IDCARD_DATABASE_URL")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("projects", help="manage projects and their credentials")
    projects = p.add_subparsers(dest="projects_command", required=True)
    c = projects.add_parser("create", help="create a project; prints its credentials as JSON")
    c.add_argument("name")
    c.add_argument("--rate-limit", type=int, default=None, metavar="N",
                   help="requests per minute for this project (default: unlimited)")
    c.set_defaults(func=cmd_projects_create)
    kinds = [*CREDENTIAL_KINDS, "all"]
    r = projects.add_parser(
        "rotate", help="issue new credentials; the old ones stay valid for a grace period; "
                       "prints the new ones as JSON")
    r.add_argument("project_id", metavar="PROJECT_ID")
    r.add_argument("--credential", required=True, choices=kinds,
                   help="which credential to rotate (all: token, AK/SK and webhook secret)")
    r.add_argument("--grace", type=_grace_seconds, default=None, metavar="SECONDS",
                   help="how long the replaced credential keeps working (default "
                        "IDCARD_CREDENTIAL_GRACE_SECONDS, 86400; 0 ends it at once)")
    r.set_defaults(func=cmd_projects_rotate)
    v = projects.add_parser(
        "revoke-previous", help="end the grace period of the previous credentials now")
    v.add_argument("project_id", metavar="PROJECT_ID")
    v.add_argument("--credential", choices=kinds, default="all",
                   help="which previous credential to revoke (default all)")
    v.set_defaults(func=cmd_projects_revoke_previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idcard-ocr", description="Read Chinese resident ID cards."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("recognize", help="recognise images in this process (no server)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--jsonl", action="store_true",
                   help="one JSON line per image even for a single image")
    add_request_options(p)
    p.set_defaults(func=cmd_recognize)
    _add_batch_command(sub)
    _add_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
