"""Latency and memory of the recognition pipeline against plain full-image RapidOCR.

    python bench/speed.py --count 60 --seed 0

For each generated photo (presets and sides mixed, at the sizes the generator gives)
it times (a) ``recognize()`` with ``return_verification`` - decode, locate, rectify,
read, verify - and (b) the baseline: ``cv2.imdecode`` plus RapidOCR on the whole photo.
The order of (a) and (b) alternates per photo; both are warmed up on three extra photos
first. Then it re-runs the pipeline in a fresh subprocess (``--pipeline-only``) to learn
the peak memory of a worker that never loaded the baseline path. One JSON summary goes
to stdout; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PRESETS = ("clean", "mild", "rotated", "perspective", "cluttered", "lowlight",
           "glare_mild", "blur_mild", "small")
SIDES = ("front", "back")
WARMUP = 3


@dataclass(frozen=True)
class Photo:
    seed: int
    preset: str
    side: str
    data: bytes
    width: int
    height: int


def _make(spec: tuple[int, str, str]) -> Photo:
    from synthcard import make_photo

    seed, preset, side = spec
    case = make_photo(seed, preset, side)
    h, w = case.image.shape[:2]
    return Photo(seed, preset, side, case.image_bytes, w, h)


def generate(count: int, seed: int) -> tuple[list[Photo], list[Photo]]:
    """(warm-up photos, timed photos). Photo i uses seed+i; warm-ups follow the timed ones.

    Generation runs in child processes so this process never holds the generator's
    memory and its peak RSS stays that of recognition.
    """
    # 9 presets and 2 sides are coprime: every preset comes with both sides.
    specs = [(seed + i, PRESETS[i % len(PRESETS)], SIDES[i % len(SIDES)])
             for i in range(count + WARMUP)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(2, os.cpu_count() or 1)) as pool:
        photos = pool.map(_make, specs, chunksize=1)
    return photos[count:], photos[:count]


# --- the two contenders ------------------------------------------------------------------

def run_pipeline(data: bytes) -> str | None:
    """Our whole pipeline; the error code when it refuses the photo."""
    from idcard.errors import ServiceError
    from idcard.options import RecognitionOptions
    from worker.recognition.engine import recognize

    try:
        recognize(data, RecognitionOptions(flags=frozenset({"return_verification"})))
    except ServiceError as e:
        return e.code.value
    return None


def run_baseline(data: bytes) -> int:
    """Plain RapidOCR on the whole decoded photo; the number of text lines it found."""
    import cv2
    import numpy as np

    from worker.recognition.ocr import get_ocr

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return len(get_ocr().full_image(bgr))


def _timed(fn: Any, data: bytes) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(data)
    return time.perf_counter() - t0, out


def stage_split(photos: list[Photo]) -> dict[str, Any] | None:
    """Median seconds per stage, from ``engine.analyse`` and its ``timings``.

    ``decode`` is ``imageio.load_image``; the engine's own timing keys follow;
    ``analyse_other`` is what ``analyse`` spent outside them (side choice, field
    parsing); ``build_result`` is the response and verification.
    """
    from idcard.errors import ServiceError
    from idcard.options import RecognitionOptions
    from worker.recognition import engine, imageio
    from worker.recognition.verification import china_today

    options = RecognitionOptions(flags=frozenset({"return_verification"}))
    today = china_today()
    rows: dict[str, list[float]] = defaultdict(list)
    for p in photos:
        t0 = time.perf_counter()
        image = imageio.load_image(p.data)
        t1 = time.perf_counter()
        try:
            rec = engine.analyse(image, options)
        except ServiceError:
            continue
        t2 = time.perf_counter()
        engine.build_result(rec, options, today)
        t3 = time.perf_counter()
        rows["decode"].append(t1 - t0)
        for k, v in rec.timings.items():
            rows[k].append(v)
        rows["analyse_other"].append((t2 - t1) - sum(rec.timings.values()))
        rows["build_result"].append(t3 - t2)
        rows["total"].append(t3 - t0)
    if not rows or set(rows) <= {"decode", "analyse_other", "build_result", "total"}:
        return None  # the engine exposes no timings of its own
    out: dict[str, Any] = {k: round(statistics.median(v), 4) for k, v in rows.items()}
    out["n"] = len(rows["total"])
    return out


# --- statistics and environment ----------------------------------------------------------

def stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": round(statistics.median(s), 4), "p90": round(p90, 4),
            "mean": round(statistics.fmean(s), 4), "min": round(s[0], 4),
            "max": round(s[-1], 4)}


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux's VmHWM where there is one: ``ru_maxrss`` of a child started by fork+exec
    starts at the parent's peak at the fork, which would hide the child's own figure.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def ort_threads() -> dict[str, Any]:
    import cv2
    import onnxruntime

    from worker.recognition.ocr import get_ocr

    info: dict[str, Any] = {
        "IDCARD_OCR_THREADS": os.environ.get("IDCARD_OCR_THREADS"),
        "onnxruntime": onnxruntime.__version__,
        "opencv_threads": cv2.getNumThreads(),
    }
    from worker.recognition.ocr import SECOND_REC_MODEL_PATH, rec_model_path

    # Both paths use these: the baseline is RapidOCR with the engine's own models.
    info["rec_model"] = os.path.basename(rec_model_path())
    info["name_second_opinion_model"] = os.path.basename(SECOND_REC_MODEL_PATH)
    try:  # private attributes of RapidOCR: report them when they are there
        so = get_ocr()._det.infer.session.get_session_options()
        info["intra_op_num_threads"] = so.intra_op_num_threads
        info["inter_op_num_threads"] = so.inter_op_num_threads
        info["note"] = "0 means onnxruntime's default: one thread per physical core"
    except AttributeError:
        pass
    return info


def _sizes(photos: list[Photo]) -> dict[str, Any]:
    mp_ = [p.width * p.height / 1e6 for p in photos]
    return {"median_megapixels": round(statistics.median(mp_), 2),
            "min": f"{min(p.width for p in photos)}x{min(p.height for p in photos)}",
            "max": f"{max(p.width for p in photos)}x{max(p.height for p in photos)}",
            "median_kib": round(statistics.median(len(p.data) for p in photos) / 1024, 1)}


# --- the two modes -----------------------------------------------------------------------

def pipeline_only(warm: list[Photo], photos: list[Photo]) -> dict[str, Any]:
    """What a worker process that only ever runs ``recognize()`` costs."""
    for p in warm:
        run_pipeline(p.data)
    secs = [_timed(run_pipeline, p.data)[0] for p in photos]
    return {"mode": "pipeline-only", "n": len(photos), "pipeline_seconds": stats(secs),
            "peak_rss_mib": peak_rss_mib()}


def compare(warm: list[Photo], photos: list[Photo], split: bool) -> dict[str, Any]:
    for p in warm:
        run_pipeline(p.data)
        run_baseline(p.data)
    rss_after_warmup = peak_rss_mib()
    ours: list[float] = []
    base: list[float] = []
    errors: Counter[str] = Counter()
    for i, p in enumerate(photos):
        if i % 2 == 0:
            ta, err = _timed(run_pipeline, p.data)
            tb, _ = _timed(run_baseline, p.data)
        else:
            tb, _ = _timed(run_baseline, p.data)
            ta, err = _timed(run_pipeline, p.data)
        ours.append(ta)
        base.append(tb)
        if err:
            errors[err] += 1
        print(f"[{i + 1}/{len(photos)}] {p.preset}/{p.side} {p.width}x{p.height}: "
              f"pipeline {ta:.2f}s, baseline {tb:.2f}s", file=sys.stderr, flush=True)
    a, b = stats(ours), stats(base)
    out: dict[str, Any] = {
        "n": len(photos),
        "pipeline_seconds": a,
        "baseline_seconds": b,
        "speedup_of_medians": round(b["median"] / a["median"], 2),
        "goal_pipeline_median_le_baseline": a["median"] <= b["median"],
        "pipeline_faster_on": f"{sum(x <= y for x, y in zip(ours, base, strict=True))}"
                              f"/{len(photos)}",
        "pipeline_errors": dict(errors),
        "peak_rss_mib": {"after_warmup_both": rss_after_warmup,
                         "after_run_both": peak_rss_mib()},
    }
    if split:
        print("stage split: one more pipeline pass", file=sys.stderr, flush=True)
        out["pipeline_stage_median_seconds"] = stage_split(photos)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=60, help="timed photos (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="seed of photo 0; photo i uses seed+i")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="time only recognize() and report this process's peak memory")
    ap.add_argument("--no-subprocess", action="store_true",
                    help="skip the fresh --pipeline-only process")
    ap.add_argument("--no-split", action="store_true",
                    help="skip the per-stage pass over engine.analyse timings")
    ap.add_argument("--photos-stdin", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")

    start = time.perf_counter()
    if args.photos_stdin:  # the parent hands over the photos it generated
        warm, photos = pickle.load(sys.stdin.buffer)
    else:
        print(f"generating {args.count + WARMUP} photos", file=sys.stderr, flush=True)
        warm, photos = generate(args.count, args.seed)
    if args.pipeline_only:
        print(json.dumps(pipeline_only(warm, photos), indent=2))
        return 0

    summary: dict[str, Any] = {
        "config": {"count": args.count, "seed": args.seed, "cpu_count": os.cpu_count(),
                   "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
                   "presets": list(PRESETS), "sides": list(SIDES)},
        "photos": _sizes(photos),
    }
    summary.update(compare(warm, photos, split=not args.no_split))
    summary["config"]["threads"] = ort_threads()
    if not args.no_subprocess:
        print("pipeline-only subprocess", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--pipeline-only",
             "--photos-stdin", "--count", str(args.count), "--seed", str(args.seed)],
            input=pickle.dumps((warm, photos)), stdout=subprocess.PIPE, check=True,
        )
        summary["pipeline_only_process"] = json.loads(proc.stdout)
    summary["config"]["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
