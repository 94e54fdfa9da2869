"""Precision, recall and cost of the eight alerts on generated photos.

    python bench/alerts.py --count 100 --negatives 400 [--processes 2] [--seed 300000]
    python bench/alerts.py --calibrate [--count 100 --negatives 320] [--calib-seed 100000]

Photos come from :func:`synthcard.alerts.make_alert_photo`: per alert ``--count``
positives (strengths 0, 1/3, 2/3, 1 in turn, front and back faces), plus ``--negatives``
legitimate photos under hard conditions (clean, mild, low light, slight blur, strong
texture, tight crop, a phone's EXIF, mild glare). Every photo is recognised once with
all eight ``detect_*`` flags; an alert's negatives are every photo labelled negative for
it, i.e. the legitimate photos and the other alerts' positives (except the labels
``synthcard.alerts.UNDETERMINED`` leaves open). A photo the engine refuses (AIS.0104)
raises no alert: a missed positive, a correct negative; refusals are counted apart
(``positives_refused``, and ``recall_answered`` over the photos the engine answered).
With all eight flags on, a card clearly in the photo but too blurred or too moiré to read
is answered (fields "", with its alerts) when the blur or reproduce alert is raised on
it, so such photos are no longer refusals (README "A card too poor to read").

Case ``i`` uses seed ``--seed + i``. ``--calibrate`` runs the same plan on seeds from
``--calib-seed`` (default 100000), prints the score distributions and, per alert, the
threshold that maximises min(precision, recall). The detectors were calibrated on
seeds 100000-101119; report on a range that does not overlap it (the default
``--seed`` 300000 does not).
``--cost N`` times recognition with and without the alerts on N legitimate photos.
Progress goes to stderr, one JSON summary to stdout. See ``bench/README.md``.
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

from idcard.options import ALERTS  # noqa: E402

GOAL_PRECISION = GOAL_RECALL = 0.95
GOAL_FALSE_ALARM = 0.02
GOAL_COST = 0.25
GOAL_POSITIVES, GOAL_NEGATIVES = 100, 300  # cases per alert the goals are judged on
CALIBRATION_SEEDS = (100000, 101119)  # where the detectors' decision points were set
SIDES = ("front", "back")


@dataclass(frozen=True)
class Task:
    index: int
    seed: int
    condition: str
    strength: float
    side: str


@dataclass
class Outcome:
    task: Task
    labels: dict[str, bool]
    scores: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def plan(count: int, negatives: int, seed: int) -> list[Task]:
    """Per alert ``count`` positives, then ``negatives`` legitimate photos."""
    from synthcard.alerts import HARD_NEGATIVES, STRENGTHS

    specs: list[tuple[str, float, str]] = []
    for alert in ALERTS:
        for i in range(count):
            specs.append((alert, STRENGTHS[i % len(STRENGTHS)], SIDES[(i // 4) % 2]))
    for i in range(negatives):
        specs.append((HARD_NEGATIVES[i % len(HARD_NEGATIVES)], 0.0,
                      SIDES[(i // len(HARD_NEGATIVES)) % 2]))
    return [Task(i, seed + i, c, s, side) for i, (c, s, side) in enumerate(specs)]


# --- the worker side ---------------------------------------------------------------------

def _init_worker(single_thread: bool) -> None:
    if single_thread:
        # Set before the engine is imported: get_ocr() reads it on first use.
        os.environ["IDCARD_OCR_THREADS"] = "1"
        import cv2

        cv2.setNumThreads(1)


def _all_alerts():
    from idcard.options import DETECT_FLAGS, RecognitionOptions

    return RecognitionOptions(flags=frozenset(DETECT_FLAGS))


def run_case(task: Task) -> Outcome:
    from idcard.errors import ServiceError
    from synthcard.alerts import make_alert_photo
    from worker.recognition.engine import recognize

    case = make_alert_photo(task.seed, task.condition, task.strength, task.side)
    out = Outcome(task, dict(case.labels))
    t0 = time.perf_counter()
    try:
        result = recognize(case.image_bytes, _all_alerts())["result"]
    except ServiceError as e:
        out.error = e.code.value
    except Exception as e:  # noqa: BLE001 - recognize() should never raise these; count them
        out.error = f"exception:{type(e).__name__}"
    else:
        info = result.get("score_info", {})
        out.scores = {a: int(info[f"{a}_score"]) for a in ALERTS if f"{a}_score" in info}
    out.seconds = time.perf_counter() - t0
    return out


# --- the figures ---------------------------------------------------------------------------

def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _split(outcomes: list[Outcome], alert: str) -> tuple[list[Outcome], list[Outcome]]:
    pos = [o for o in outcomes if o.labels.get(alert) is True]
    neg = [o for o in outcomes if o.labels.get(alert) is False]
    return pos, neg


def _raised(o: Outcome, alert: str, threshold: int) -> bool:
    return o.error is None and o.scores.get(alert, 0) >= threshold


def evaluate_alert(outcomes: list[Outcome], alert: str, threshold: int) -> dict[str, Any]:
    from synthcard.alerts import HARD_NEGATIVES

    pos, neg = _split(outcomes, alert)
    tp = sum(_raised(o, alert, threshold) for o in pos)
    fp_cases = [o for o in neg if _raised(o, alert, threshold)]
    legit = [o for o in neg if o.task.condition in HARD_NEGATIVES]
    clean = [o for o in legit if o.task.condition == "clean"]
    by_strength: dict[float, list[bool]] = defaultdict(list)
    for o in pos:
        by_strength[o.task.strength].append(_raised(o, alert, threshold))
    fp = len(fp_cases)
    refused = sum(o.error is not None for o in pos)
    return {
        "threshold": threshold,
        "positives": len(pos),
        "negatives": len(neg),
        "negatives_legit": len(legit),
        "negatives_other_alerts": len(neg) - len(legit),
        "precision": _rate(tp, tp + fp),
        "recall": _rate(tp, len(pos)),
        "recall_answered": _rate(tp, len(pos) - refused),
        "false_alarm_legit": _rate(sum(_raised(o, alert, threshold) for o in legit), len(legit)),
        "false_alarm_clean": _rate(sum(_raised(o, alert, threshold) for o in clean), len(clean)),
        "legit_photos": len(legit),
        "positives_refused": refused,
        "recall_by_strength": {f"{s:.2f}": _rate(sum(v), len(v))
                               for s, v in sorted(by_strength.items())},
        "false_alarms_by_condition": dict(Counter(o.task.condition for o in fp_cases)),
    }


def best_threshold(outcomes: list[Outcome], alert: str) -> dict[str, Any]:
    """The threshold maximising min(precision, recall); ties: the middle of the best run."""
    pos, neg = _split(outcomes, alert)
    rows = []
    for t in range(1, 100):
        tp = sum(_raised(o, alert, t) for o in pos)
        fp = sum(_raised(o, alert, t) for o in neg)
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / len(pos) if pos else 0.0
        rows.append((min(p, r), t, p, r))
    top = max(v for v, *_ in rows)
    best = [row for row in rows if row[0] == top]
    _, t, p, r = best[len(best) // 2]
    return {"threshold": t, "precision": round(p, 4), "recall": round(r, 4),
            "best_range": [best[0][1], best[-1][1]]}


def _quantiles(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else values * 19
    return {"min": min(values), "p5": qs[0], "p25": qs[4], "median": qs[9], "p75": qs[14],
            "p95": qs[18], "max": max(values)}


def distributions(outcomes: list[Outcome]) -> dict[str, Any]:
    out = {}
    for alert in ALERTS:
        pos, neg = _split(outcomes, alert)
        by_cond: dict[str, list[int]] = defaultdict(list)
        for o in neg:
            if o.error is None:
                by_cond[o.task.condition].append(o.scores.get(alert, 0))
        out[alert] = {
            "positives": _quantiles([o.scores.get(alert, 0) for o in pos if o.error is None]),
            "negatives": _quantiles([o.scores.get(alert, 0) for o in neg if o.error is None]),
            "negatives_max_by_condition": {c: max(v) for c, v in sorted(by_cond.items())},
        }
    return out


# --- cost ------------------------------------------------------------------------------------

def measure_cost(n: int, seed: int) -> dict[str, Any]:
    """Recognition time of the same photos with and without all eight alerts."""
    from idcard.errors import ServiceError
    from idcard.options import RecognitionOptions
    from synthcard.alerts import make_alert_photo
    from worker.recognition import alerts, imageio
    from worker.recognition.engine import analyse, recognize

    photos = [make_alert_photo(seed + i, ("clean", "mild", "lowlight", "texture")[i % 4], 0.0,
                               SIDES[i % 2]).image_bytes for i in range(n + 1)]
    plain, with_alerts, alert_only, recog = [], [], [], []
    recognize(photos[-1], _all_alerts())  # warm-up: models and caches
    for i, data in enumerate(photos[:n]):
        order = [False, True] if i % 2 == 0 else [True, False]
        for use in order:
            t0 = time.perf_counter()
            try:
                recognize(data, _all_alerts() if use else RecognitionOptions())
            except ServiceError:
                pass
            (with_alerts if use else plain).append(time.perf_counter() - t0)
        # The alerts alone, on one reading: the context and the eight detectors.
        try:
            rec = analyse(imageio.load_image(data), RecognitionOptions())
        except ServiceError:
            continue
        side = rec.front or rec.back
        t0 = time.perf_counter()
        alerts.response_fields(alerts.AlertContext(rec.image, side.read), _all_alerts())
        alert_only.append(time.perf_counter() - t0)
        recog.append(plain[-1])
    sum_plain, sum_alerts = sum(plain), sum(with_alerts)
    isolated = sum(alert_only) / sum(recog) if recog else None
    return {
        "photos": n,
        "recognize_median_seconds": round(statistics.median(plain), 3),
        "recognize_with_alerts_median_seconds": round(statistics.median(with_alerts), 3),
        "end_to_end_increase": round(sum_alerts / sum_plain - 1, 4),
        "alerts_median_seconds": round(statistics.median(alert_only), 4) if alert_only else None,
        "alerts_share_of_recognition": round(isolated, 4) if isolated is not None else None,
        "goal_increase_le_0.25": isolated is not None and isolated <= GOAL_COST,
    }


# --- main ------------------------------------------------------------------------------------

def _progress(done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    eta = elapsed / done * (total - done)
    print(f"[{done}/{total}] {elapsed:.0f}s elapsed, ~{eta:.0f}s left", file=sys.stderr,
          flush=True)


def run(tasks: list[Task], processes: int) -> list[Outcome]:
    total = len(tasks)
    step = max(1, total // 50)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    if processes == 1:
        for t in tasks:
            outcomes.append(run_case(t))
            if len(outcomes) % step == 0 or len(outcomes) == total:
                _progress(len(outcomes), total, start)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited ONNX/OpenCV threads
        with ctx.Pool(processes, initializer=_init_worker, initargs=(True,)) as pool:
            for o in pool.imap_unordered(run_case, tasks, chunksize=1):
                outcomes.append(o)
                if len(outcomes) % step == 0 or len(outcomes) == total:
                    _progress(len(outcomes), total, start)
    return sorted(outcomes, key=lambda o: o.task.index)


def _load_dump(path: Path) -> list[Outcome]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for c in data["cases"]:
        task = Task(**c["task"])
        out.append(Outcome(task, c["labels"], c["scores"], c["error"], c["seconds"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100, help="positives per alert (default 100)")
    ap.add_argument("--negatives", type=int, default=400,
                    help="legitimate hard photos (default 400: 50 per condition, so that "
                         "every alert has at least 300 of them); each alert's negatives "
                         "also include the other alerts' positives")
    ap.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--seed", type=int, default=300000,
                    help="seed of case 0; case i uses seed+i (default 300000, clear of the "
                         "calibration seeds {}-{})".format(*CALIBRATION_SEEDS))
    ap.add_argument("--calibrate", action="store_true",
                    help="suggest thresholds from a calibration run on --calib-seed")
    ap.add_argument("--calib-seed", type=int, default=100000,
                    help="first seed of the calibration run (default 100000)")
    ap.add_argument("--cost", type=int, default=20, metavar="N",
                    help="photos for the cost measurement (default 20; 0 skips it)")
    ap.add_argument("--dump", "--out", type=Path, help="also write every case's scores here")
    ap.add_argument("--from-dump", type=Path,
                    help="summarise a previous --dump instead of recognising photos")
    args = ap.parse_args(argv)
    if args.count < 1 or args.negatives < 0 or args.processes < 1:
        ap.error("--count and --processes must be at least 1, --negatives at least 0")

    from worker.recognition.alerts import thresholds

    start = time.perf_counter()
    seed = args.calib_seed if args.calibrate else args.seed
    if args.from_dump:
        outcomes = _load_dump(args.from_dump)
    else:
        outcomes = run(plan(args.count, args.negatives, seed), args.processes)
    wall = time.perf_counter() - start
    limits = thresholds()
    summary: dict[str, Any] = {
        "mode": "calibrate" if args.calibrate else "evaluate",
        "config": {"count": args.count, "negatives": args.negatives, "seed": seed,
                   "seed_range": [seed, seed + len(outcomes) - 1],
                   "calibration_seeds": list(CALIBRATION_SEEDS),
                   "overlaps_calibration": (not args.calibrate and seed <= CALIBRATION_SEEDS[1]
                                            and seed + len(outcomes) - 1 >= CALIBRATION_SEEDS[0]),
                   "processes": args.processes, "photos": len(outcomes),
                   "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg())},
        "refused": dict(Counter(o.error for o in outcomes if o.error)),
    }
    if args.calibrate:
        summary["distributions"] = distributions(outcomes)
        summary["suggested"] = {a: best_threshold(outcomes, a) for a in ALERTS}
        summary["current"] = {a: evaluate_alert(outcomes, a, limits[a]) for a in ALERTS}
    else:
        per = {a: evaluate_alert(outcomes, a, limits[a]) for a in ALERTS}
        summary["alerts"] = per
        summary["goals"] = {
            a: {"precision_ge_0.95": (r["precision"] or 0) >= GOAL_PRECISION,
                "recall_ge_0.95": (r["recall"] or 0) >= GOAL_RECALL,
                "false_alarm_legit_le_0.02": (r["false_alarm_legit"] or 0) <= GOAL_FALSE_ALARM,
                "enough_cases": (r["positives"] >= GOAL_POSITIVES
                                 and r["negatives"] >= GOAL_NEGATIVES
                                 and r["negatives_legit"] >= GOAL_NEGATIVES)}
            for a, r in per.items()}
        times = [o.seconds for o in outcomes if o.error is None]
        summary["recognize_with_alerts_seconds"] = {
            "median": round(statistics.median(times), 3) if times else None}
    if args.cost and not args.from_dump:
        summary["cost"] = measure_cost(args.cost, seed + 10_000_000)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    summary["recognition_wall_seconds"] = round(wall, 1)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    if args.dump:
        cases = [{"task": asdict(o.task), "labels": o.labels, "scores": o.scores,
                  "error": o.error, "seconds": round(o.seconds, 3)} for o in outcomes]
        args.dump.write_text(json.dumps({"summary": summary, "cases": cases},
                                        ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
