"""Blocking within the border: a finger or an object over part of the card.

What it measures: the largest compact region of the card whose paper does not look
like paper, as a share of the card. The card is cut into 32 × 20 cells (2.7 mm); per
cell the paper's lightness is the cell's mean upper envelope (a 1.6 mm maximum filter
removes the print, which is thinner than that) and its colour the median-filtered a*b*.
The card's paper is modelled as a plane in lightness (light falls off across a card)
and one colour; a cell is covered when it is darker than the plane by more than
DARKER, or further than CHROMA from the paper's colour. Covered cells are opened with
2 × 2 cells, so thin strips (a sliver of background along a slightly misplaced edge)
drop out, and the largest connected region counts.

Why: print is thin and the paper around it shows through the maximum filter, while a
finger, a coin, a pen or a phone is an opaque surface several millimetres across, of a
colour or lightness no card has. The portrait's figure (front: head and shoulders; the
top corners of its box are light background, judged like paper) and the emblem's disc
(back; the corners of its box are paper) are left out: they are not paper, and an
object wholly inside them cannot be told from the photo (one reaching out over the
paper, or over the background above and beside the head, is seen by that part). Cells are placed by the layout fitted to the recognised captions
(:attr:`AlertContext.layout_to_card`), so a card read from a rough outline is judged on
its paper, not on the background around it. Not judged at all (score 0), because
where its paper lies is not known well enough: a card of which no field could be read
(:attr:`AlertContext.readable`), a card whose text runs askew in the card image
(:attr:`AlertContext.text_tilt`: the outline is not the card's), a card cut off by the frame
(:attr:`AlertContext.cut_off`: read from what is left of it), a card too blurred to
read (the blur alert's decision point: which side is up is not reliable either), a
temporary card (laid out otherwise), and a black-and-white copy or a recapture (the copy
and reproduce alerts' decision points: the paper seen is a sheet's or a screen's).
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.alerts.blur import CENTRE_RATIO as BLUR_CENTRE_RATIO
from worker.recognition.alerts.blur import BlurDetector
from worker.recognition.alerts.copy import CopyDetector
from worker.recognition.alerts.interim import InterimDetector
from worker.recognition.alerts.reproduce import ReproduceDetector
from worker.recognition.layout import (
    BACK_EMBLEM_MM,
    CARD_H_PX,
    CARD_W_PX,
    FRONT_PORTRAIT_MM,
    mm,
)

GRID_W, GRID_H = 32, 20
ENVELOPE_PX = 8  # at half resolution, 1.6 mm: wider than any stroke of print
DARKER = 0.22  # relative to the paper plane
CHROMA = 14.0  # Lab a*b* units from the paper's colour
ZONE_GROW_MM = 0.8  # margin around the portrait / emblem (print jitter, registration)
ZONE_CELL_SHARE = 0.25  # of a cell: how far a judged cell's centre stays from the zone
# The portrait's figure, in shares of its box: the head (with hair, long hair too) is an
# ellipse centred at HEAD_CENTRE_Y of the box's height, the shoulders fill the box's
# width below SHOULDERS_Y. The rest of the box (its top corners) is light background.
HEAD_HALF_W, HEAD_HALF_H, HEAD_CENTRE_Y = 0.36, 0.36, 0.46
SHOULDERS_Y = 0.62
# Text running at more than this angle (degrees) across the card image: the reader's
# outline is not the card's, so neither is the layout the cells are placed by.
MAX_TILT_DEG = 6.0
# Score 50 at this share of the judged cells covered (1.8 % is about 9 cells, 65 mm²,
# a disc 9 mm across).
CENTRE_SHARE = 0.018
WIDTH_SHARE = 0.004


def _judged_cells(layout: np.ndarray, side: str | None) -> np.ndarray:
    """bool GRID_H × GRID_W: the cells that lie on the card's paper by the fitted layout.

    Left out: cells outside the card (a card read from a rough outline shows background
    at its edges), the rounded corners, and the portrait box (front) or the emblem
    (back), grown by ZONE_GROW_MM, which are not paper.
    """
    cw, ch = CARD_W_PX / GRID_W, CARD_H_PX / GRID_H
    yy, xx = np.mgrid[0:GRID_H, 0:GRID_W].astype(np.float64)
    centres = np.stack([(xx.ravel() + 0.5) * cw, (yy.ravel() + 0.5) * ch, np.ones(xx.size)])
    u, v, _ = np.linalg.inv(layout) @ centres  # cell centres in layout coordinates
    x0, y0, x1, y1 = (mm(c) for c in (FRONT_PORTRAIT_MM if side == "front" else BACK_EMBLEM_MM))
    # A cell whose centre lies this close to the zone sees too much of it to be judged.
    grow = mm(ZONE_GROW_MM) + ZONE_CELL_SHARE * max(cw, ch)
    if side == "front":
        # The holder's head and shoulders, not the whole box: above the hair and beside
        # the head the portrait's background is as light as the paper.
        bw, bh = x1 - x0, y1 - y0
        head = np.hypot((u - (x0 + 0.5 * bw)) / (HEAD_HALF_W * bw + grow),
                        (v - (y0 + HEAD_CENTRE_Y * bh)) / (HEAD_HALF_H * bh + grow)) < 1
        shoulders = (v > y0 + SHOULDERS_Y * bh - grow) & (v < y1 + grow)
        in_box = (u > x0 - grow) & (u < x1 + grow)
        in_zone = in_box & (head | shoulders)
    else:  # the emblem is a disc: the corners of its box are paper
        r = (x1 - x0) / 2
        in_zone = np.hypot(u - (x0 + x1) / 2, v - (y0 + y1) / 2) < r + grow
    on_card = (u > cw / 2) & (u < CARD_W_PX - cw / 2) & (v > ch / 2) & (v < CARD_H_PX - ch / 2)
    corner = ((u < 1.5 * cw) | (u > CARD_W_PX - 1.5 * cw)) & (
        (v < 1.5 * ch) | (v > CARD_H_PX - 1.5 * ch))
    return (on_card & ~in_zone & ~corner).reshape(GRID_H, GRID_W)


class BlockingDetector:
    name = "blocking_within_border"

    def covered_cells(self, ctx: AlertContext) -> tuple[np.ndarray, np.ndarray]:
        """(covered, valid): bool GRID_H × GRID_W maps of covered and judged cells."""
        # Half resolution is plenty for 2.7 mm cells.
        lab = cv2.resize(ctx.card_lab, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        size = (GRID_W, GRID_H)
        env = cv2.dilate(lab[..., 0], np.ones((ENVELOPE_PX, ENVELOPE_PX), np.uint8))
        light = cv2.resize(env, size, interpolation=cv2.INTER_AREA).astype(np.float64)
        ab = np.stack([
            cv2.resize(cv2.medianBlur(np.ascontiguousarray(lab[..., k]), 5), size,
                       interpolation=cv2.INTER_AREA).astype(np.float32) - 128.0
            for k in (1, 2)], axis=-1)
        frame = cv2.resize(ctx.in_frame.astype(np.float32), size,
                           interpolation=cv2.INTER_AREA) > 0.95
        valid = frame & _judged_cells(ctx.layout_to_card, ctx.side)
        covered = np.zeros_like(valid)
        if valid.sum() < 20:
            return covered, valid
        yy, xx = np.mgrid[0:GRID_H, 0:GRID_W].astype(np.float64)
        a = np.stack([np.ones(int(valid.sum())), xx[valid], yy[valid]], 1)
        target = light[valid].astype(np.float64)
        weight = np.ones(len(target))
        for _ in range(4):  # a plane fitted to the paper cells, ignoring the others
            coef, *_ = np.linalg.lstsq(a * weight[:, None], target * weight, rcond=None)
            res = target - a @ coef
            scale = 1.4826 * float(np.median(np.abs(res))) + 1e-3
            weight = (np.abs(res) < 2.5 * scale + 1.0).astype(np.float64)
        plane = coef[0] + coef[1] * xx + coef[2] * yy
        darker = (plane - light) / np.maximum(plane, 1.0)
        a0 = float(np.median(ab[..., 0][valid]))
        b0 = float(np.median(ab[..., 1][valid]))
        chroma = np.hypot(ab[..., 0] - a0, ab[..., 1] - b0)
        covered = ((darker > DARKER) | (chroma > CHROMA)) & valid
        return covered, valid

    def measure(self, ctx: AlertContext) -> float:
        """Share of the judged cells in the largest covered region."""
        if not ctx.readable or ctx.cut_off or ctx.text_tilt > MAX_TILT_DEG:
            # Nothing read (side guessed), or read from what is left of the card: the
            # layout is not reliable.
            return 0.0
        if BlurDetector().measure(ctx) > BLUR_CENTRE_RATIO:
            return 0.0  # too blurred to read: which side is up is not reliable either
        if InterimDetector().score(ctx) >= 50:
            return 0.0  # a temporary card: its portrait and print are laid out otherwise
        if CopyDetector().score(ctx) >= 50 or ReproduceDetector().score(ctx) >= 50:
            # A copy or a recapture: what lies around the card is a sheet or a screen,
            # and its "paper" is the copier's or the screen's, not the card's.
            return 0.0
        covered, valid = self.covered_cells(ctx)
        if not covered.any():
            return 0.0
        opened = cv2.morphologyEx(covered.astype(np.uint8), cv2.MORPH_OPEN,
                                  np.ones((2, 2), np.uint8), borderType=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        n, _labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
        largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
        return largest / max(1, int(valid.sum()))

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_SHARE, WIDTH_SHARE)
