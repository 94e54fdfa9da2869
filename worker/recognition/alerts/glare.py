"""Glare: a reflection or over-exposure that washes out the print.

What it measures: how many of the card's always-printed cells (captions, titles, the
number, the portrait's head: :mod:`.layout_cells`, placed by the layout fitted to the
recognised captions) hold no ink and are as bright as the paper: a cell counts fully
when its darkest pixel is at least WASHED_HIGH of the paper's level, and only if its
mean is no darker than the paper. Glare adds light: over a specular spot dark ink
becomes as light as paper and the paper clips to white, so print that must be there
vanishes.

Why this and not "bright pixels": a well-exposed card is mostly near-white paper and
may clip to 255 without hiding anything, and a blurred or low-contrast card has grey
ink but still has ink, which darkens its cell. Only a cell that must hold print and
shows none but light is evidence of glare over the text, which is what makes a card
unreadable. Two guards: a black-and-white copy is not judged (the cells were measured
on the colour print, whose light inks a copier drops), nor a card whose always-printed
cells are mostly empty (the reader's outline is not where the card is).
"""

from __future__ import annotations

import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.alerts.layout_cells import CELL_H, CELL_W, aligned_cells

# A cell counts fully as washed out when its darkest pixel (0.5th percentile of the
# min-channel) is at least WASHED_HIGH of the paper's level, and not at all below
# WASHED_LOW: ink on a card is well under half the paper's level.
WASHED_LOW = 0.8
WASHED_HIGH = 0.95
BRIGHT = 0.99
MONOCHROME = 8.0  # chroma spread under which the card is a black-and-white copy
MIN_INKED = 0.6  # share of the always-printed cells that must show ink
# Score 50 at this many washed-out cells (a cell is 5.35 × 5.4 mm).
CENTRE_CELLS = 2.2
WIDTH_CELLS = 0.3


class GlareDetector:
    name = "glare"

    def measure(self, ctx: AlertContext) -> float:
        """The number of always-printed cells washed out (soft count)."""
        if ctx.chroma_spread < MONOCHROME:
            # A black-and-white copy: the cells were measured on the colour print (the
            # gold emblem, tinted guilloche), which a copier turns white.
            return 0.0
        mc = ctx.card_min_channel
        frame = ctx.in_frame
        paper = max(ctx.paper_level, 40.0)
        ink = (mc < 0.6 * paper) & frame
        washed = 0.0
        judged = inked = 0
        for _i, _j, (x0, y0, x1, y1) in aligned_cells(ink, ctx.side, ctx.layout_to_card):
            if min(x1 - x0, y1 - y0) < 0.5 * min(CELL_W, CELL_H):
                continue  # off the card image
            if frame[y0:y1, x0:x1].mean() < 0.9:
                continue  # off the photo: border integrity's business
            judged += 1
            inked += int(ink[y0:y1, x0:x1].sum() >= 15)
            cell = mc[y0:y1, x0:x1]
            darkest = float(np.percentile(cell, 0.5))
            # Added light: the cell is no darker than the paper on average (blurred or
            # faint print is lighter than ink but still darkens its cell).
            if float(cell.mean()) < BRIGHT * paper:
                continue
            washed += float(np.clip((darkest / paper - WASHED_LOW)
                                    / (WASHED_HIGH - WASHED_LOW), 0.0, 1.0))
        # When most of the cells that must hold print hold none, the card was not read
        # where it lies (a wrong outline): the layout says nothing then.
        if judged == 0 or inked < MIN_INKED * judged:
            return 0.0
        return washed

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_CELLS, WIDTH_CELLS)
