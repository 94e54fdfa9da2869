"""``idcard-synth``: write synthetic ID card photos with their expected fields.

    idcard-synth OUT_DIR --count N --preset clean --side front --seed 0

writes ``NNNN.jpg`` (``.png`` for presets without JPEG) and ``NNNN.json`` per case, and
``manifest.jsonl`` with one line per case.  Case ``i`` uses seed ``--seed + i``, so any
single case can be regenerated with :func:`synthcard.make_photo`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .photo import PRESETS, Case, make_photo

SIDES = ("front", "back", "double_side")


def case_record(case: Case, seed: int, file_name: str) -> dict[str, Any]:
    """The JSON-serialisable description of one case (expected fields, geometry, params)."""
    return {
        "file": file_name,
        "seed": seed,
        "preset": case.preset,
        "side": case.side,
        "expected": case.expected,
        "quads": [[[round(float(x), 2), round(float(y), 2)] for x, y in q] for q in case.quads],
        "text_location": case.text_locations,
        "portrait_location": case.portrait_location,
        "params": case.params,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="idcard-synth",
        description="Generate synthetic Chinese ID card photos (no real data) for tests "
        "and benchmarks.",
    )
    p.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    p.add_argument("--count", type=int, default=10, help="number of photos (default 10)")
    p.add_argument("--preset", default="clean",
                   help=f"one of {', '.join(PRESETS)}, or 'all' to cycle through them")
    p.add_argument("--side", default="front", choices=[*SIDES, "all"],
                   help="card side(s) in each photo; 'all' cycles through them")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.preset != "all" and args.preset not in PRESETS:
        _parser().error(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    if args.count < 0:
        _parser().error("--count must be >= 0")
    presets = list(PRESETS) if args.preset == "all" else [args.preset]
    sides = list(SIDES) if args.side == "all" else [args.side]

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for i in range(args.count):
            seed = args.seed + i
            preset = presets[i % len(presets)]
            side = sides[(i // len(presets)) % len(sides)]
            case = make_photo(seed, preset, side)
            ext = "jpg" if case.image_bytes[:2] == b"\xff\xd8" else "png"
            name = f"{i:04d}.{ext}"
            (out / name).write_bytes(case.image_bytes)
            record = case_record(case, seed, name)
            (out / f"{i:04d}.json").write_text(
                json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
            manifest.write(json.dumps(record, ensure_ascii=False) + "\n")
            if not args.quiet:
                print(f"\r{i + 1}/{args.count}", end="", file=sys.stderr, flush=True)
    if not args.quiet:
        dt = time.perf_counter() - start
        print(f"\nwrote {args.count} cases to {out} in {dt:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
