"""Field accuracy of the recognition engine on generated photos.

    python bench/accuracy.py --count 500 --processes 2 --seed 0 --out results.json

Photos are generated on the fly by :mod:`synthcard` (nothing is written to disk except
the optional ``--out`` JSON). Case ``i`` of the plan uses seed ``--seed + i``, so the
same arguments always give the same photos. Progress goes to stderr; one JSON summary
goes to stdout. See ``bench/README.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from worker.recognition.fields import BACK_FIELDS, FRONT_FIELDS  # noqa: E402
from worker.recognition.ocr import rec_model_path  # noqa: E402

# Presets per group. 'clean_mild' is the "clean or mildly degraded" set.
GROUPS: dict[str, tuple[str, ...]] = {
    "clean_mild": ("clean", "mild", "cluttered", "lowlight", "glare_mild", "blur_mild", "small"),
    "rotated_perspective": ("rotated", "perspective"),
    "double_side": ("mild",),
}
# The goals: every field's exact-match rate at least this, per group.
GOALS: dict[str, float] = {"clean_mild": 0.99, "rotated_perspective": 0.97}
FIELDS: tuple[str, ...] = FRONT_FIELDS + BACK_FIELDS
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class Task:
    index: int
    seed: int
    group: str
    preset: str
    side: str


@dataclass
class Outcome:
    task: Task
    expected: dict[str, str]
    got: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # an AIS.* code, or "exception:<Type>" for a bench failure
    wrong_side: bool = False
    seconds: float = 0.0

    def correct(self, name: str) -> bool:
        return self.error is None and self.got.get(name) == self.expected[name]

    @property
    def whole_card(self) -> bool:
        return all(self.correct(name) for name in self.expected)


def plan(count: int, seed: int, double_fraction: float) -> list[Task]:
    """The cases of a run: double_side gets ``double_fraction``, the rest 60/40.

    Within a group, presets cycle with period P and sides with period 5 (front, back,
    front, back, front: 60% front); P and 5 are coprime, so every preset gets both sides
    and even a short run mixes them.
    """
    n_double = round(count * double_fraction)
    rest = count - n_double
    n_clean = round(rest * 0.6)
    sizes = {"clean_mild": n_clean, "rotated_perspective": rest - n_clean,
             "double_side": n_double}
    tasks: list[Task] = []
    for group, size in sizes.items():
        presets = GROUPS[group]
        for k in range(size):
            preset = presets[k % len(presets)]
            if group == "double_side":
                side = "double_side"
            else:
                side = "front" if k % 5 in (0, 2, 4) else "back"
            i = len(tasks)
            tasks.append(Task(i, seed + i, group, preset, side))
    return tasks


# --- the worker side ---------------------------------------------------------------------

def _init_worker(single_thread: bool) -> None:
    if single_thread:
        # Set before the engine is imported: get_ocr() reads it on first use.
        os.environ["IDCARD_OCR_THREADS"] = "1"
        import cv2

        cv2.setNumThreads(1)


def _flatten(d: dict[str, Any], side: str) -> dict[str, str]:
    if side == "double_side":
        return {**d.get("front", {}), **d.get("back", {})}
    return dict(d)


def run_case(task: Task) -> Outcome:
    from idcard.errors import ServiceError
    from idcard.options import RecognitionOptions
    from synthcard import make_photo
    from worker.recognition.engine import recognize

    case = make_photo(task.seed, task.preset, task.side)
    expected = _flatten(case.expected, task.side)
    out = Outcome(task, expected)
    options = RecognitionOptions(side="double_side" if task.side == "double_side" else None)
    t0 = time.perf_counter()
    try:
        result = recognize(case.image_bytes, options)["result"]
    except ServiceError as e:
        out.error = e.code.value
    except Exception as e:  # noqa: BLE001 - recognize() should never raise these; count them
        out.error = f"exception:{type(e).__name__}"
    else:
        out.got = {k: v for k, v in _flatten(result, task.side).items() if isinstance(v, str)}
        if task.side != "double_side":
            other = BACK_FIELDS if task.side == "front" else FRONT_FIELDS
            out.wrong_side = any(name in out.got for name in other)
    out.seconds = time.perf_counter() - t0
    return out


# --- the report --------------------------------------------------------------------------

def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarize(outcomes: list[Outcome], goal: float | None = None) -> dict[str, Any]:
    per_field: dict[str, dict[str, Any]] = {}
    for name in FIELDS:
        relevant = [o for o in outcomes if name in o.expected]
        if not relevant:
            continue
        right = sum(o.correct(name) for o in relevant)
        per_field[name] = {"rate": _rate(right, len(relevant)),
                           "wrong": f"{len(relevant) - right}/{len(relevant)}"}
    errors = Counter(o.error for o in outcomes if o.error)
    secs = [o.seconds for o in outcomes]
    out: dict[str, Any] = {
        "n": len(outcomes),
        "whole_card_rate": _rate(sum(o.whole_card for o in outcomes), len(outcomes)),
        "field_rate": {k: v["rate"] for k, v in per_field.items()},
        "field_wrong": {k: v["wrong"] for k, v in per_field.items()},
        "errors": dict(sorted(errors.items())),
        "wrong_side": sum(o.wrong_side for o in outcomes),
        "recognize_seconds": {
            "mean": round(statistics.fmean(secs), 3) if secs else None,
            "median": round(statistics.median(secs), 3) if secs else None,
        },
    }
    if goal is not None:
        below = [k for k, v in per_field.items() if v["rate"] is None or v["rate"] < goal]
        out["goal"] = {"per_field_at_least": goal, "met": bool(per_field) and not below,
                       "fields_below": below}
    return out


def examples(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for o in sorted(outcomes, key=lambda o: o.task.index):
        base = {"seed": o.task.seed, "preset": o.task.preset, "side": o.task.side}
        if o.error:
            rows.append({**base, "field": "*", "expected": None, "got": o.error})
        else:
            rows.extend({**base, "field": name, "expected": o.expected[name],
                         "got": o.got.get(name)}
                        for name in o.expected if not o.correct(name))
        if len(rows) >= MAX_EXAMPLES:
            break
    return rows[:MAX_EXAMPLES]


def report(outcomes: list[Outcome], args: argparse.Namespace, wall: float) -> dict[str, Any]:
    by_group: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_group[o.task.group].append(o)
    groups = {g: summarize(os_, GOALS.get(g)) for g, os_ in by_group.items()}
    per_preset: dict[str, dict[str, Any]] = {}
    for g, os_ in by_group.items():
        by_preset: dict[str, list[Outcome]] = defaultdict(list)
        for o in os_:
            by_preset[o.task.preset].append(o)
        per_preset[g] = {
            p: {"n": len(v), "whole_card_rate": _rate(sum(o.whole_card for o in v), len(v)),
                "errors": sum(o.error is not None for o in v)}
            for p, v in by_preset.items()
        }
    return {
        "config": {
            "count": args.count, "cases": len(outcomes), "seed": args.seed,
            "processes": args.processes,
            "cpu_count": os.cpu_count(), "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
            "double_fraction": args.double_fraction,
            "ocr_threads_per_process": os.environ.get("IDCARD_OCR_THREADS")
            if args.processes == 1 else "1",
            "groups": {g: list(p) for g, p in GROUPS.items()},
            "rec_model": os.path.basename(rec_model_path()),
        },
        "wall_seconds": round(wall, 1),
        "goals": {f"{g}_per_field_ge_{t}": groups[g]["goal"]["met"]
                  for g, t in GOALS.items() if g in groups},
        "overall": summarize(outcomes),
        "groups": groups,
        "per_preset_whole_card": per_preset,
        "mismatches": examples(outcomes),
    }


def _progress(done: int, total: int, start: float, outcomes: list[Outcome]) -> None:
    elapsed = time.perf_counter() - start
    eta = elapsed / done * (total - done)
    ok = sum(o.whole_card for o in outcomes)
    errs = sum(o.error is not None for o in outcomes)
    print(f"[{done}/{total}] {elapsed:.0f}s elapsed, ~{eta:.0f}s left; "
          f"whole-card {ok}/{done}, errors {errs}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500, help="total photos (default 500)")
    ap.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of case 0; case i uses seed+i")
    ap.add_argument("--double-fraction", type=float, default=0.1,
                    help="share of the double_side group (default 0.1)")
    ap.add_argument("--group", action="append", choices=sorted(GROUPS),
                    help="run only this group (repeatable); seeds stay those of the full plan")
    ap.add_argument("--out", type=Path, help="also write the summary and every case here")
    args = ap.parse_args(argv)
    if args.count < 1 or args.processes < 1:
        ap.error("--count and --processes must be at least 1")

    tasks = plan(args.count, args.seed, args.double_fraction)
    if args.group:
        tasks = [t for t in tasks if t.group in args.group]
    total = len(tasks)
    if not total:
        ap.error("no case left: raise --count or change --group")
    step = max(1, total // 40)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    if args.processes == 1:
        for t in tasks:
            outcomes.append(run_case(t))
            if len(outcomes) % step == 0 or len(outcomes) == total:
                _progress(len(outcomes), total, start, outcomes)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited ONNX/OpenCV threads
        with ctx.Pool(args.processes, initializer=_init_worker, initargs=(True,)) as pool:
            for o in pool.imap_unordered(run_case, tasks, chunksize=1):
                outcomes.append(o)
                if len(outcomes) % step == 0 or len(outcomes) == total:
                    _progress(len(outcomes), total, start, outcomes)
    wall = time.perf_counter() - start

    summary = report(outcomes, args, wall)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    if args.out:
        cases = [{**asdict(o.task), "expected": o.expected, "got": o.got, "error": o.error,
                  "wrong_side": o.wrong_side, "seconds": round(o.seconds, 3)}
                 for o in sorted(outcomes, key=lambda o: o.task.index)]
        args.out.write_text(json.dumps({"summary": summary, "cases": cases},
                                       ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
