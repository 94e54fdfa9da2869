"""``idcard-ocr``: the command line (contract section 4)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def _add_service_commands(sub: argparse._SubParsersAction) -> None:
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
    _add_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
