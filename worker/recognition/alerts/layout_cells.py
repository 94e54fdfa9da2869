"""Where a card always carries print, as a coarse grid over the canonical card.

The card is cut into a 16 × 10 grid of cells (5.35 × 5.4 mm). A cell marked 1 holds
print on every card of that side whatever the holder's data: the captions, the start
of every value (a name has at least two characters, an address at least eleven), the
18-digit number, the portrait's head, the emblem and the two titles. The maps were
measured on the published layout (the share of 200 rendered cards with ink in each
cell, kept at ≥ 97 %) and then thinned by hand at the edges of blocks. The portrait's
cells stop at the neck: beside and below it the holder's clothes may be white.

Detectors use them to tell "nothing is printed here" from "something hides the print
here" (glare washes it out). Because a read card can be off by a few millimetres, the
grid is slid over the card to where the most of these cells find ink before it is used
(:func:`aligned_cells`).
"""

from __future__ import annotations

import numpy as np

from worker.recognition.layout import CARD_H_PX, CARD_W_PX

GRID_W, GRID_H = 16, 10
CELL_W, CELL_H = CARD_W_PX / GRID_W, CARD_H_PX / GRID_H

_FRONT = """
................
.1111...........
.1111......111..
.111.111...111..
.11111111...1...
.111111111..1...
...111..........
................
.11111111111111.
................
"""
_BACK = """
.11.............
.111..11111111..
.111..11111111..
.111.1111111111.
.....1111111111.
................
................
...111111.......
...1111111......
................
"""


def _parse(text: str) -> np.ndarray:
    rows = [r for r in text.strip().splitlines()]
    grid = np.array([[ch == "1" for ch in r] for r in rows], bool)
    assert grid.shape == (GRID_H, GRID_W)
    return grid


ALWAYS_INK = {"front": _parse(_FRONT), "back": _parse(_BACK)}

# Offsets (card px) tried when aligning the grid, after the fitted layout: ±1.5 mm.
_SHIFTS = (-15, -8, 0, 8, 15)


def cell_box(i: int, j: int, m: np.ndarray | None = None, dx: int = 0, dy: int = 0,
             ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of cell row ``i``, column ``j`` through the layout map ``m``
    (scale and shift), shifted by (dx, dy), clipped to the card."""
    s, tx, ty = (1.0, 0.0, 0.0) if m is None else (float(m[0, 0]), float(m[0, 2]),
                                                    float(m[1, 2]))
    x0 = int(round(j * CELL_W * s + tx)) + dx
    y0 = int(round(i * CELL_H * s + ty)) + dy
    x1 = int(round((j + 1) * CELL_W * s + tx)) + dx
    y1 = int(round((i + 1) * CELL_H * s + ty)) + dy
    return max(0, x0), max(0, y0), min(CARD_W_PX, x1), min(CARD_H_PX, y1)


def aligned_cells(ink: np.ndarray, side: str | None, layout: np.ndarray | None = None,
                  min_ink_px: int = 15, cells: np.ndarray | None = None,
                  ) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """The always-printed cells of ``side`` (or the grid ``cells``) as (row, col, box):
    through ``layout`` (the fitted layout map, :attr:`AlertContext.layout_to_card`),
    then slid a little to where the most of them contain at least ``min_ink_px`` pixels
    of ``ink`` (a bool mask)."""
    if side not in ALWAYS_INK:
        return []
    rows, cols = np.nonzero(ALWAYS_INK[side] if cells is None else cells)
    integral = np.pad(ink.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    shifts = np.array([(dx, dy) for dy in _SHIFTS for dx in _SHIFTS])
    base = np.array([cell_box(int(i), int(j), layout) for i, j in zip(rows, cols, strict=True)])
    x0 = np.clip(base[None, :, 0] + shifts[:, :1], 0, CARD_W_PX)
    y0 = np.clip(base[None, :, 1] + shifts[:, 1:], 0, CARD_H_PX)
    x1 = np.clip(base[None, :, 2] + shifts[:, :1], 0, CARD_W_PX)
    y1 = np.clip(base[None, :, 3] + shifts[:, 1:], 0, CARD_H_PX)
    counts = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    found = (counts >= min_ink_px).sum(axis=1)
    # Prefer the smallest shift among the best: the layout was fitted already.
    order = np.lexsort((np.abs(shifts).sum(axis=1), -found))
    dx, dy = (int(v) for v in shifts[order[0]])
    return [(int(i), int(j), cell_box(int(i), int(j), layout, dx, dy))
            for i, j in zip(rows, cols, strict=True)]
