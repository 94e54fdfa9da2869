"""``idcard-ocr batch INPUT --out FILE``: the options, the run, the summary.

Exit status: 0 when every item of INPUT has an ``ok`` result in FILE, 1 when any has an
error, 2 for a usage error (bad options, an unusable INPUT or FILE, a server that
refuses the credentials), 130 when interrupted (Ctrl-C or SIGTERM; run the same command
again to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from idcard.bulk.items import InputError, Item, item_options, option_fields, read_input
from idcard.bulk.output import Outcome, OutputError, ResultsFile, open_results
from idcard.bulk.progress import Progress
from idcard.bulk.server import ServerAbort
from idcard.errors import ServiceError
from idcard.options import ALERTS, RecognitionOptions

TOKEN_ENV = "IDCARD_BATCH_TOKEN"
DEFAULT_IN_FLIGHT = 32
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """The batch's own options; the request options are ``recognize``'s, added by the
    caller (``idcard.cli.add_request_options``)."""
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="a folder of images (recursively: jpg, jpeg, png, bmp, tif, tiff) "
                        "or a .csv/.jsonl manifest with a file, path or url column and "
                        "optional per-item request options")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="results, .jsonl or .csv; an existing FILE is resumed: its items "
                        "are skipped and new results appended")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="local mode: recognition processes (default 1)")
    p.add_argument("--server", metavar="URL",
                   help="server mode: submit bulk jobs to this idcard-ocr API instead")
    p.add_argument("--project-id", metavar="ID", help="server mode: the project")
    p.add_argument("--token", metavar="TOKEN",
                   help=f"server mode: the project's X-Auth-Token (default ${TOKEN_ENV})")
    p.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, metavar="N",
                   help=f"server mode: jobs submitted and not yet ended at most "
                        f"(default {DEFAULT_IN_FLIGHT})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: only when stderr is a terminal)")
    p.add_argument("--summary", type=Path, metavar="FILE",
                   help="write the summary JSON here instead of stdout")


def _usage(message: str) -> int:
    sys.stderr.write(f"idcard-ocr batch: {message}\n")
    return EXIT_USAGE


def _check_args(args: argparse.Namespace) -> str | None:
    if args.server:
        if args.processes is not None:
            return "--processes is for local mode; with --server use --in-flight"
        if not args.project_id:
            return "--server needs --project-id"
        if not (args.token or os.environ.get(TOKEN_ENV)):
            return f"--server needs --token or {TOKEN_ENV}"
        if not args.server.lower().startswith(("http://", "https://")):
            return "--server must be an http(s) URL"
        if args.in_flight < 1:
            return "--in-flight must be at least 1"
    elif args.processes is not None and args.processes < 1:
        return "--processes must be at least 1"
    return None


class Tally:
    """The summary's counts, over the items of INPUT that are in FILE."""

    def __init__(self, alerts: tuple[str, ...]) -> None:
        self.status: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter({a: 0 for a in alerts})
        self.engine_seconds: list[float] = []

    def add(self, outcome: Outcome) -> None:
        self.status["ok" if outcome.ok else "error"] += 1
        if not outcome.ok:
            self.error_codes[outcome.error_code or "unknown"] += 1
        self.alerts.update(outcome.alerts)


class BatchRun:
    """One run over INPUT: what is left to do, written to FILE as it finishes."""

    def __init__(self, items: list[Item], base: dict[str, Any], results: ResultsFile,
                 progress: Progress, tally: Tally) -> None:
        self.items, self.base = items, base
        self.results, self.progress, self.tally = results, progress, tally
        self.processed = 0

    def record(self, key: str, response: dict[str, Any], seconds: float | None = None
               ) -> None:
        outcome = self.results.write(key, response)
        self.processed += 1
        self.tally.add(outcome)
        if seconds is not None:
            self.tally.engine_seconds.append(seconds)
        self.progress.advance(outcome.ok)

    def pending(self) -> Iterator[tuple[Item, RecognitionOptions]]:
        """The items not in FILE yet, with their options; an item that is an error
        already (a bad manifest row, bad options) is recorded here and not yielded."""
        for item in self.items:
            if item.key in self.results.done:
                continue
            if item.error is not None:
                self.record(item.key, item.error)
                continue
            try:
                options = item_options(item, self.base)
            except ServiceError as exc:
                self.record(item.key, exc.to_body())
                continue
            yield item, options


def _alerts_asked(items: list[Item], base: dict[str, Any]) -> tuple[str, ...]:
    asked = set()
    for item in items:
        try:
            asked |= set(item_options(item, base).alerts)
        except ServiceError:
            pass
    return tuple(a for a in ALERTS if a in asked)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_batch(args: argparse.Namespace, options: RecognitionOptions) -> int:
    try:
        return _run_batch(args, options)
    except KeyboardInterrupt:  # before the items started (or after): nothing half-done
        sys.stderr.write("idcard-ocr batch: interrupted\n")
        return EXIT_INTERRUPTED


def _run_batch(args: argparse.Namespace, options: RecognitionOptions) -> int:
    problem = _check_args(args)
    if problem:
        return _usage(problem)
    if args.server:
        try:
            import httpx  # noqa: F401
        except ImportError:
            return _usage("--server needs httpx: pip install 'idcard-ocr[service]'")
    try:
        source = read_input(args.input)
    except InputError as exc:
        return _usage(str(exc))
    if source.duplicates:
        what = "entry" if source.duplicates == 1 else "entries"
        sys.stderr.write(f"idcard-ocr batch: {source.duplicates} repeated {what} in INPUT: "
                         "each file is read once\n")
    if source.unknown_columns:
        sys.stderr.write("idcard-ocr batch: ignoring unknown manifest column(s): "
                         + ", ".join(source.unknown_columns) + "\n")
    items = source.items
    if not items:
        sys.stderr.write(f"idcard-ocr batch: {args.input}: no images to read\n")
    base = option_fields(options)
    alerts = _alerts_asked(items, base)
    try:
        results = open_results(args.out, alerts)
    except OutputError as exc:
        return _usage(str(exc))

    keys = {item.key for item in items}
    tally = Tally(alerts)
    for key, outcome in results.done.items():
        if key in keys:
            tally.add(outcome)
    already = sum(tally.status.values())
    enabled = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(len(items), already, enabled=enabled)
    run = BatchRun(items, base, results, progress, tally)

    summary: dict[str, Any] = {"mode": "server" if args.server else "local"}
    runner: Any
    if args.server:
        from idcard.bulk.server import ServerRunner, ServerTask

        summary["in_flight"] = args.in_flight
        runner = ServerRunner(args.server, args.project_id,
                              args.token or os.environ[TOKEN_ENV], args.in_flight)
        work = (ServerTask(item.key, option_fields(opts), item.path, item.url)
                for item, opts in run.pending())
    else:
        from idcard.bulk.local import LocalRunner, LocalTask

        summary["processes"] = args.processes or 1
        runner = LocalRunner(args.processes or 1)
        work = (LocalTask(item.key, opts, str(item.path) if item.path else None, item.url)
                for item, opts in run.pending())

    start = time.monotonic()
    code: int | None = None
    abort = ""
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        runner.run(work, run.record)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except ServerAbort as exc:
        abort, code = str(exc), EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        seconds = time.monotonic() - start
        progress.close()
        results.close()
    if abort:
        sys.stderr.write(f"idcard-ocr batch: {abort}\n")

    done = sum(tally.status.values())
    summary.update({
        "total": len(items),
        "already_done": already,
        "processed": run.processed,
        "remaining": len(items) - done,
        "complete": done == len(items),
        "status": {"ok": tally.status["ok"], "error": tally.status["error"]},
        "error_codes": dict(sorted(tally.error_codes.items())),
        "alerts": {a: tally.alerts[a] for a in alerts},
        "seconds": round(seconds, 3),
        "items_per_second": round(run.processed / seconds, 3) if seconds > 0 else None,
    })
    if not args.server:
        secs = tally.engine_seconds
        summary["engine_seconds_per_item"] = round(sum(secs) / len(secs), 4) if secs else None
    else:
        summary["rate_limited"] = runner.rate_limited
        summary["retried"] = runner.retried
    _write_summary(summary, args.summary)

    if code == EXIT_INTERRUPTED:
        sys.stderr.write(f"idcard-ocr batch: interrupted; {done} of {len(items)} items are "
                         f"in {args.out}. Run the same command again to resume.\n")
    if code is not None:
        return code
    return 1 if tally.status["error"] else 0


def _write_summary(summary: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(summary, ensure_ascii=False, indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"idcard-ocr batch: cannot write the summary to {path} "
                         f"({exc.strerror})\n{text}")
