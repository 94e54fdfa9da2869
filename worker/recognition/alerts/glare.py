"""Glare: a reflection or over-exposure that washes out the print.

What it measures: how many of the card's always-printed cells (captions, titles, the
number, the portrait's head: :mod:`.layout_cells`, placed by the layout fitted to the
recognised captions; on the back also the rest of a validity period read as a date
range, which runs on to about 69 mm) hold no ink and are as bright as the paper or
brighter: a cell counts fully when its darkest pixel is at least WASHED_HIGH of the
paper's level, and only if its mean is no darker than the paper and its lighter pixels
are clipped white or lighter than the paper; and at least one of the cells counted must
be clipped white throughout (its 10th percentile at CLIPPED: the spot's core). Glare
adds light: over a specular spot dark ink becomes as light as paper and the paper clips
to white, so print that must be there vanishes.

Why this and not "bright pixels": a well-exposed card is mostly near-white paper and may
clip to 255 without hiding anything, and a blurred or low-contrast card has grey ink but
still has ink, which darkens its cell. Only a cell that must hold print and shows none
but light is evidence of glare over the text, which is what makes a card unreadable. A
patch of paper colour pasted over a field (tampering) empties cells too, but adds no
light. Not judged (score 0), because the layout does not say where print must be: a
black-and-white copy (the cells were measured on the colour print, whose light inks a
copier drops; the copy alert's decision point), a card cut off by the frame
(:attr:`AlertContext.cut_off`: read from what is left of it), a temporary card (laid out
otherwise), a blurred card (faint everywhere), and a card whose always-printed cells
mostly hold neither ink nor washed-out light (the reader's outline is not where the card
is), nor a card with an object over it or cut off (the blocking and border integrity
alerts' decision points: the reader's outline follows the object's or the frame's edge)
when fewer than OFF_LAYOUT_CELLS cells are washed out (more, with a clipped core, is
light whatever else is over the card). Cells past the end of a value line read whole but
set short of the card's typesetting (:func:`.tampering.short_field_zones`) do not count:
that paper is empty because the line is short (a field typed again on a patch), not
because light washed print out.

A second measure, in the same units, sees a reflection beside the always-printed cells
(over a value, whose length varies, or over the pattern between rows): a specular spot
(:func:`spot_cells`), the largest region of the card clipped white with no print left
in it, where the card's paper away from it is darker. It scores 50 at SPOT_CENTRE_MM2
(a disc of about 24 mm), and only where the light falls off around it: the paper
just outside the spot is brighter than the paper 8-16 mm out, as it is around a
reflection, and not where a bright photo clips a stretch of plain paper bounded by the
print (the back between its emblem and titles), with the paper beyond as light. An
over-exposed photo clips the paper everywhere but keeps
the security print's lines, which break the clipped paper up; a white object over the
card or background past a cut edge is as flat, so the spot does not count where the
blocking or border integrity alert is raised. The spot needs no field read, so a card
so washed out that none of its fields can be read, but whose titles or captions say it
is an ID card, is judged by it alone (the engine then answers it with the glare alert
instead of AIS.0104); the cells are not judged on such a card.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.alerts.blur import CENTRE_RATIO as BLUR_CENTRE_RATIO
from worker.recognition.alerts.blur import BlurDetector
from worker.recognition.alerts.copy import CopyDetector
from worker.recognition.alerts.interim import InterimDetector
from worker.recognition.alerts.layout_cells import (
    ALWAYS_INK,
    CELL_H,
    CELL_W,
    GRID_W,
    aligned_cells,
)
from worker.recognition.alerts.tampering import short_field_zones
from worker.recognition.layout import FRONT_PORTRAIT_MM, mm

# A cell counts fully as washed out when its darkest pixel (0.5th percentile of the
# min-channel) is at least WASHED_HIGH of the paper's level, and not at all below
# WASHED_LOW: ink on a card is well under half the paper's level.
WASHED_LOW = 0.8
WASHED_HIGH = 0.95
BRIGHT = 0.99
CLIPPED = 250  # min-channel: white in all three channels
LIGHTER = 4.0  # grey levels over the paper's level that added light brings at least
MONOCHROME = 8.0  # chroma spread under which the card is a black-and-white copy
MIN_INKED = 0.6  # share of the always-printed cells that must show ink
# Score 50 at this many washed-out cells (a cell is 5.35 × 5.4 mm).
CENTRE_CELLS = 0.5
WIDTH_CELLS = 0.12
# An outline pulled off the card (an object over it, the frame cutting it) leaves up to
# about this many always-printed cells empty where the layout expects print; more,
# with a core clipped white, is light whatever else is over the card.
OFF_LAYOUT_CELLS = 2.0
# A specular spot (spot_cells): the region clipped white, eroded by this much (mm) so
# that paper clipped between the lines of the security print falls apart ...
SPOT_ERODE_MM = 1.0
# ... scores like CENTRE_CELLS at this area (mm², about a 24 mm disc) ...
SPOT_CENTRE_MM2 = 420.0
# ... where the card's paper further than SPOT_FAR_MM from it (text left out, at least
# SPOT_FAR_MIN_SHARE of the card) has a median min-channel of at most SPOT_FAR_LEVEL.
SPOT_FAR_MM = 8.0
SPOT_FAR_MIN_SHARE = 0.15
SPOT_FAR_LEVEL = 250.0
# ... and where the light falls off around it: the paper next to the spot (within
# SPOT_NEAR_MM) is at least SPOT_FALLOFF grey levels brighter than the paper a little
# further out (SPOT_RING_MM), in the median of the min-channel, text left out.
SPOT_NEAR_MM = 3.0
SPOT_RING_MM = (8.0, 16.0)
SPOT_FALLOFF = 5.0


# The back's validity line, once its second date has begun, runs on to here (mm): the
# end of "YYYY.MM.DD-YYYY.MM.DD". Read short, the rest of it was washed out.
_VALIDITY = re.compile(r"\d{4}\.?\d{2}\.?\d{2}-\d")
_VALIDITY_END_MM = 69.0
_VALIDITY_ROW = 8


def _printed_cells(ctx: AlertContext) -> np.ndarray | None:
    """The cells that must hold print on this card: the always-printed ones, and on the
    back the rest of a validity period read as a date range. Not the back's top row:
    it holds only the emblem's rim (its top 1-1.5 mm), and an outline read a millimetre
    low puts the photo's background there, which may be as light as the paper."""
    if ctx.side != "back":
        return None
    cells = ALWAYS_INK["back"].copy()
    cells[0, :] = False
    for ln in ctx.lines:
        if _VALIDITY.search(ln.text) and "长期" not in ln.text and ln.cy > mm(42):
            last = min(GRID_W - 1, int(mm(_VALIDITY_END_MM) // CELL_W) - 1)
            cells[_VALIDITY_ROW, 3:last + 1] = True
    return cells


def _layout_unreliable(ctx: AlertContext) -> bool:
    """Whether another alert says the card's print is not where the layout puts it: an
    object over the card (its edge pulls the reader's outline off the card), a card cut
    off by the frame (the other alerts' decision points). Empty cells are no evidence
    of light there. (Not a recapture: the reproduce alert's decision point is met by
    some strong glare, whose white core looks like a screen's raised, flat light.)"""
    from worker.recognition.alerts.blocking import BlockingDetector
    from worker.recognition.alerts.border_integrity import BorderIntegrityDetector

    return any(d.score(ctx) >= 50 for d in (BlockingDetector(), BorderIntegrityDetector()))


class GlareDetector:
    name = "glare"

    def measure(self, ctx: AlertContext) -> float:
        """The number of always-printed cells washed out (soft count), or a specular
        spot's area in the same units (:func:`spot_cells`), whichever is larger."""
        if ctx.cut_off:
            # Read from what is left of the card: the layout is not reliable.
            return 0.0
        if ctx.chroma_spread < MONOCHROME or CopyDetector().score(ctx) >= 50:
            # A black-and-white copy: the cells were measured on the colour print (the
            # gold emblem, tinted guilloche), which a copier turns white.
            return 0.0
        if InterimDetector().score(ctx) >= 50:
            return 0.0  # a temporary card: its print is laid out otherwise
        blur = BlurDetector().measure(ctx)
        if blur > BLUR_CENTRE_RATIO:
            return 0.0  # blurred print is faint everywhere: it would look washed out
        washed = _washed_cells(ctx) if ctx.readable else 0.0
        spot = spot_cells(ctx)
        if spot > washed and spot >= CENTRE_CELLS - 4 * WIDTH_CELLS and _layout_unreliable(ctx):
            # A white object over the card, or the background past a cut edge, is as
            # flat and white as a reflection's core: the spot says nothing there.
            spot = 0.0
        return max(washed, spot)

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_CELLS, WIDTH_CELLS)


def spot_cells(ctx: AlertContext) -> float:
    """A specular spot, in washed-out-cell units: the largest region of the card clipped
    white throughout (after an erosion by SPOT_ERODE_MM, so that paper clipped between
    the lines of the security print does not count: a reflection's core has no print
    left at all), scaled so that SPOT_CENTRE_MM2 scores like CENTRE_CELLS; and only
    where the card's paper away from it (past SPOT_FAR_MM, text left out) is darker
    than SPOT_FAR_LEVEL: a reflection is light added to one place, while an
    over-exposed photo clips the card's paper everywhere and hides nothing that its
    print does not still show; and only where the paper within SPOT_NEAR_MM of it is
    brighter than the paper in SPOT_RING_MM by SPOT_FALLOFF (added light falls off
    around its core). Judged on a card nothing could be read from too: the
    card's region does not need its fields."""
    mc = ctx.card_min_channel
    region = ctx.card_region
    clipped = ((mc >= CLIPPED) & region).astype(np.uint8)
    if ctx.side == "front":
        # The portrait's background is plain, with no security print over it: on a
        # bright photo it clips flat white whole. Placed by the fitted layout.
        box = np.array([[FRONT_PORTRAIT_MM[0], FRONT_PORTRAIT_MM[1]],
                        [FRONT_PORTRAIT_MM[2], FRONT_PORTRAIT_MM[3]]], np.float64) * mm(1.0)
        m = ctx.layout_to_card
        (x0, y0), (x1, y1) = (m[:2, :2] @ box.T).T + m[:2, 2]
        ys = slice(max(0, int(y0)), max(0, int(np.ceil(y1))))
        clipped[ys, max(0, int(x0)):max(0, int(np.ceil(x1)))] = 0
    r = int(round(mm(SPOT_ERODE_MM)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    core = cv2.erode(clipped, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    if n <= 1:
        return 0.0
    biggest = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
    spot = cv2.dilate((labels == biggest).astype(np.uint8), kernel)
    area_mm2 = float(spot.sum()) / (mm(1.0) ** 2)
    # Distance (card px) from the spot: the paper further than SPOT_FAR_MM away.
    dist = cv2.distanceTransform((spot == 0).astype(np.uint8), cv2.DIST_L2, 3)
    paper = region & (ctx.text_mask == 0)
    far = paper & (dist > mm(SPOT_FAR_MM))
    if far.sum() < SPOT_FAR_MIN_SHARE * region.sum():
        return 0.0  # the spot is about the whole card: over-exposure, not a spot
    if float(np.median(mc[far])) > SPOT_FAR_LEVEL:
        return 0.0
    near = paper & (dist > 0) & (dist <= mm(SPOT_NEAR_MM))
    ring = paper & (dist > mm(SPOT_RING_MM[0])) & (dist <= mm(SPOT_RING_MM[1]))
    if (near.sum() >= mm(1.0) ** 2 * 10 and ring.sum() >= mm(1.0) ** 2 * 10
            and float(np.median(mc[near])) - float(np.median(mc[ring])) < SPOT_FALLOFF):
        return 0.0  # no light falling off around it: a bright stretch of plain paper
    return CENTRE_CELLS * area_mm2 / SPOT_CENTRE_MM2


def _washed_cells(ctx: AlertContext) -> float:
    """The number of always-printed cells washed out (soft count); 0 where the layout
    cannot say where print must be."""
    mc = ctx.card_min_channel
    frame = ctx.in_frame
    paper = max(ctx.paper_level, 40.0)
    ink = (mc < 0.6 * paper) & frame
    washed = 0.0
    core = 0.0  # the whitest washed-out cell's 10th percentile
    judged = inked = 0
    cells = _printed_cells(ctx)
    short = short_field_zones(ctx.lines, ctx.side)
    for _i, _j, (x0, y0, x1, y1) in aligned_cells(ink, ctx.side, ctx.layout_to_card,
                                                  cells=cells):
        if min(x1 - x0, y1 - y0) < 0.5 * min(CELL_W, CELL_H):
            continue  # off the card image
        if any(zx0 <= (x0 + x1) / 2 <= zx1 and zy0 < y1 and zy1 > y0
               for zx0, zy0, zx1, zy1 in short):
            continue  # past the end of a whole line set short: nothing to wash out
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
        # ... and brighter than the paper, or clipped: a patch of paper colour pasted
        # over print (tampering) is empty too, but no lighter than the paper.
        if float(np.percentile(cell, 90)) < min(CLIPPED, paper + LIGHTER):
            continue
        share = float(np.clip((darkest / paper - WASHED_LOW)
                              / (WASHED_HIGH - WASHED_LOW), 0.0, 1.0))
        washed += share
        if share > 0:
            core = max(core, float(np.percentile(cell, 10)))
    # When most of the cells that must hold print hold none and are not washed out
    # either, the card was not read where it lies (a wrong outline): the layout says
    # nothing then.
    if judged == 0 or inked + washed < MIN_INKED * judged:
        return 0.0
    if core < CLIPPED:
        # A specular reflection clips its core white throughout: at least one cell
        # it washes out is white in all three channels. Empty cells at the paper's
        # own level (a patch, paper where an outline read off the card expects
        # print) are not light added.
        return 0.0
    if CENTRE_CELLS - 4 * WIDTH_CELLS < washed < OFF_LAYOUT_CELLS and _layout_unreliable(ctx):
        return 0.0
    return washed
