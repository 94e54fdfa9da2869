"""Throughput of ``idcard-ocr batch`` in local mode, one process against two.

    python bench/batch.py --count 1000 --seed 0

Generates ``--count`` photos (presets and sides mixed, as in ``speed.py``) into a
temporary folder, then runs the real command on that folder once per process count
(``--processes 1,2`` by default, in that order), each run into a fresh output file. For
each run it reports the wall time and items per second as the user sees them (model
loading included), the command's own figures from its summary, the CPU seconds (user +
sys) of the command and its pool processes, CPU utilisation (CPU seconds / wall /
processes), and the engine-only seconds per photo that the pool processes measured in
that same run, so that what the plumbing costs (start-up, model loading, reading files,
passing results, writing and fsyncing lines) is visible: ``plumbing_seconds_per_item``
is wall x processes / count minus the engine time. One JSON summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PRESETS = ("clean", "mild", "rotated", "perspective", "cluttered", "lowlight",
           "glare_mild", "blur_mild", "small")
SIDES = ("front", "back")


def _write_photo(spec: tuple[int, str, str, str]) -> None:
    from synthcard import make_photo

    seed, preset, side, stem = spec
    data = make_photo(seed, preset, side).image_bytes
    ext = "jpg" if data[:2] == b"\xff\xd8" else "png"  # presets without JPEG give PNG
    Path(f"{stem}.{ext}").write_bytes(data)


def generate(folder: Path, count: int, seed: int) -> None:
    """Photo i uses seed+i; 9 presets and 2 sides are coprime, so every preset comes
    with both sides."""
    specs = []
    for i in range(count):
        preset, side = PRESETS[i % len(PRESETS)], SIDES[i % len(SIDES)]
        specs.append((seed + i, preset, side, str(folder / f"{i:05d}-{preset}-{side}")))
    with mp.get_context("spawn").Pool(min(2, os.cpu_count() or 1)) as pool:
        pool.map(_write_photo, specs, chunksize=4)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_batch(photos: Path, work: Path, processes: int, count: int) -> dict[str, Any]:
    """One ``idcard-ocr batch`` run; its figures."""
    out = work / f"results-p{processes}.jsonl"
    summary_file = work / f"summary-p{processes}.json"
    cmd = [sys.executable, "-m", "idcard.cli", "batch", str(photos), "--out", str(out),
           "--processes", str(processes), "--summary", str(summary_file)]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    # The command and its pool processes, all waited for by then, are in RUSAGE_CHILDREN.
    cpu = _children_cpu() - cpu0
    if proc.returncode not in (0, 1):  # 1: some photos were refused, which is a result
        raise SystemExit(f"idcard-ocr batch failed ({proc.returncode}):\n{proc.stderr}")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    engine = summary["engine_seconds_per_item"]
    return {
        "processes": processes,
        "wall_seconds": round(wall, 2),
        "items_per_second": round(count / wall, 3),
        "command_seconds": summary["seconds"],  # from the pool's start to the last line
        "command_items_per_second": summary["items_per_second"],
        "cpu_seconds": round(cpu, 2),
        "cpu_utilisation": round(cpu / wall / processes, 3),
        "engine_seconds_per_item": engine,
        "plumbing_seconds_per_item": round(wall * processes / count - engine, 4)
        if engine is not None else None,
        "status": summary["status"],
        "error_codes": summary["error_codes"],
        "_results": {json.loads(line)["file"]: json.loads(line)["response"]
                     for line in out.read_text(encoding="utf-8").splitlines()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="photos (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of photo 0; photo i uses seed+i")
    ap.add_argument("--processes", default="1,2",
                    help="comma-separated process counts, run in this order (default 1,2)")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="generate into DIR and keep photos and outputs (default: a "
                         "temporary folder, removed at the end)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    try:
        counts = [int(p) for p in args.processes.split(",") if p.strip()]
    except ValueError:
        ap.error("--processes must be a comma-separated list of integers")
    if not counts or min(counts) < 1:
        ap.error("--processes must list process counts of at least 1")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idcard-bench-batch-") as tmp:
        work = args.keep or Path(tmp)
        photos = work / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for old in [*work.glob("results-p*.jsonl"), *photos.iterdir()]:  # --keep: afresh
            old.unlink()
        print(f"generating {args.count} photos", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        generate(photos, args.count, args.seed)
        generation = time.perf_counter() - t0
        load_start = os.getloadavg()[0]
        runs = []
        for n in counts:
            print(f"idcard-ocr batch --processes {n}", file=sys.stderr, flush=True)
            runs.append(run_batch(photos, work, n, args.count))
            print(f"  {runs[-1]['items_per_second']} items/s", file=sys.stderr, flush=True)

    results = [r.pop("_results") for r in runs]
    summary: dict[str, Any] = {
        "config": {"count": args.count, "seed": args.seed, "processes": counts,
                   "cpu_count": os.cpu_count(), "presets": list(PRESETS),
                   "sides": list(SIDES),
                   "IDCARD_OCR_THREADS": os.environ.get("IDCARD_OCR_THREADS"),
                   "ocr_threads_note": "the command gives each process 1 OCR thread when "
                                       "--processes > 1 and IDCARD_OCR_THREADS is unset",
                   "loadavg_1min_at_start": round(load_start, 2),
                   "loadavg_1min_at_end": round(os.getloadavg()[0], 2)},
        "count": args.count,
        "generation_seconds": round(generation, 1),
        "runs": {str(r["processes"]): r for r in runs},
        # Every run should answer every photo the same way, whatever the process count.
        "items_differing_from_first_run": {
            str(r["processes"]): sum(res.get(k) != v for k, v in results[0].items())
            for r, res in zip(runs[1:], results[1:], strict=True)},
    }
    if len(runs) > 1:
        base = runs[0]["items_per_second"]
        summary["speedup"] = {str(r["processes"]): round(r["items_per_second"] / base, 2)
                              for r in runs[1:]}
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
