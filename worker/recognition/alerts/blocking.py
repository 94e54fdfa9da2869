"""Blocking within the border: a finger or an object over part of the card.

What it measures: the largest compact region of the card whose paper does not look
like paper, as a share of the card. The card is cut into 32 × 20 cells (2.7 mm); per
cell the paper's lightness is the cell's mean upper envelope (a 1.6 mm maximum filter
removes the print, which is thinner than that) and its colour the median-filtered a*b*.
The card's paper is modelled as a plane in lightness (light falls off across a card)
and one colour; a cell is covered when it is darker than the plane by more than
DARKER, or further than CHROMA from the paper's colour (unless it is lighter than the
paper and closer to white: light washed over a tinted paper, a glare, is no object).
Covered cells are opened with 2 × 2 cells, so thin strips (a sliver of background along
a slightly misplaced edge) drop out, and the largest connected region counts.

Why: print is thin and the paper around it shows through the maximum filter, while a
finger, a coin, a pen or a phone is an opaque surface several millimetres across, of a
colour or lightness no card has. The portrait's figure (front: head and shoulders; the
top corners of its box are light background, judged like paper) and the emblem's disc
(back; the corners of its box are paper) are not paper; they are judged by what they
must show instead (:meth:`BlockingDetector.zone_covered`). The emblem's disc is red
print throughout: a cell of it with almost no red pixel, not washed out by light, is
covered (the disc is first found by its red print, a few millimetres around the
layout's place). The head, above the neck, shows hair (dark), skin (warm or pink) or
the photo's light background: a cell mostly of none of these (a grey coin, a coloured
pen) is covered (a gold coin is as yellow as some skin; a dim face brought to the
standard exposure is strongly orange, but more yellow than red, unlike a red pen;
skin may be as olive as a pinkish paper is pink). Clothes may be any colour, so
the shoulders stay unjudged, and a finger over the face is skin on skin: those are
seen only where the object reaches out of them. An unjudged cell of the portrait or emblem
between covered cells counts as covered (an object does not stop where the judging
does). Cells are placed by the layout fitted to the recognised captions
(:attr:`AlertContext.layout_to_card`, or a scale per axis when the card was read
stretched along one axis: :func:`cell_layout`), so a card read from a rough outline is
judged on its paper, not on the background around it; a caption the fit does not place
within FIT_MM (a number read in part, or re-typed at another length) is left out of it,
as it would move every cell (those beside the portrait's head on to the face). Not
judged at all (score 0), because where its paper lies is not known well enough: a card
of which no field could be read (:attr:`AlertContext.readable`), a card whose text runs
askew in the card image (:attr:`AlertContext.text_tilt`: the outline is not the card's),
a card cut off by the frame (:attr:`AlertContext.cut_off`: read from what is left of
it), a card whose captions agree on no layout even with one of them left out, a card too
blurred to read (the blur alert's decision point: which side is up is not reliable either), a
temporary card (laid out otherwise), and a black-and-white copy or a recapture (the copy
and reproduce alerts' decision points: the paper seen is a sheet's or a screen's).
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, anchor_pairs, logistic_score
from worker.recognition.alerts.blur import CENTRE_RATIO as BLUR_CENTRE_RATIO
from worker.recognition.alerts.blur import BlurDetector
from worker.recognition.alerts.border_integrity import stretched_layout
from worker.recognition.alerts.copy import CopyDetector
from worker.recognition.alerts.interim import InterimDetector
from worker.recognition.alerts.reproduce import ReproduceDetector
from worker.recognition.layout import (
    BACK_EMBLEM_MM,
    CARD_H_PX,
    CARD_W_PX,
    FRONT_PORTRAIT_MM,
    PX_PER_MM,
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
# What the portrait and the emblem must show (zone_covered). Colours are judged after
# bringing the paper to a standard exposure (a dim card's colours are as strong), as
# Lab differences from the paper's colour (a*, b*) and lightness relative to the paper.
EXPOSED_WHITE, MAX_GAIN = 230.0, 4.0
# Back: the emblem's disc is red print throughout (the gold ring, stars and gate are
# fine and broken by red); a cell of the disc with under EMBLEM_MIN_RED of its pixels
# red (a* above the paper's by RED_A) is covered.
EMBLEM_JUDGED_R = 0.75  # of the emblem's radius: cells whose centre lies within
RED_A = 20.0
EMBLEM_MIN_RED = 0.10
EMBLEM_WASHED_L = 0.85  # of the paper's lightness: a cell lighter than this is washed out
EMBLEM_SEARCH_MM = 3.0  # the emblem is found by its red print up to this far off
# Front: the head zone (inside the box by PORTRAIT_INSET, down to HEAD_ZONE_BOTTOM of its
# height, above where clothes begin) shows hair (dark, grey or brown), skin (warm, not
# saturated) or the photo's light background; a cell with more than ALIEN_SHARE of
# its pixels none of these (mid grey metal, a coloured pen) is covered.
PORTRAIT_INSET = 0.06
HEAD_ZONE_BOTTOM = 0.74
HAIR_L, HAIR_CHROMA = 0.42, 25.0  # lightness relative to the paper, chroma
# Skin is warm or pink against the paper (a* or b* above it); a yellow skin is as yellow
# as a gold coin, so gold is not told from skin.
# a* is measured from the paper's: an olive-yellow face on a pinkish paper lies 13-14
# below it (calibration seed 100899), so SKIN_MIN_A is -16 (a green object is further).
SKIN_WARM_A, SKIN_WARM_B, SKIN_MIN_A, SKIN_MAX_B = 8.0, 6.0, -16.0, 60.0
SKIN_MAX_CHROMA, SKIN_MIN_L = 55.0, 0.3
# A dim face brought to the standard exposure (its colour is amplified with the noise
# and the light's cast: calibration seed 100978, chroma 54-59) is more saturated, but
# orange-brown, more yellow than red; a red pen or marker over the face is redder
# than yellow (a* 54, b* 25 above the paper). Up to SKIN_ORANGE_CHROMA a colour with
# b* above a* counts as skin.
SKIN_ORANGE_CHROMA = 70.0
BACKGROUND_L, BACKGROUND_CHROMA = 0.75, 22.0
ALIEN_SHARE = 0.5
CLIPPED = 250  # min channel: a pixel clipped white shows nothing of what lies there
# An unjudged cell with this many covered cells among its 8 neighbours is covered.
BRIDGE_NEIGHBOURS = 3
# Text running at more than this angle (degrees) across the card image: the reader's
# outline is not the card's, so neither is the layout the cells are placed by.
MAX_TILT_DEG = 6.0
# The captions' fit must place each of them within this (mm): see cell_layout.
FIT_MM = 3.0
# Score 50 at this share of the judged cells covered (1.5 % is about 8 cells, 55 mm²;
# calibration seeds, with the portrait's head and the emblem judged: legitimate photos
# up to 1.41 % (a mild glare), objects that are seen from 1.59 %).
CENTRE_SHARE = 0.015
WIDTH_SHARE = 0.004


def _zone_cells(layout: np.ndarray, side: str | None, offset: tuple[float, float] = (0, 0),
                grown: bool = False) -> np.ndarray:
    """bool GRID_H × GRID_W: the cells judged by what the portrait or the emblem must
    show there (:meth:`BlockingDetector.zone_covered`): on the back the cells inside the
    emblem's red disc; on the front the cells of the holder's head (face, hair and the
    background beside them) above the neck, where clothes (of any colour) do not reach.
    ``offset`` (card px) moves the zone; ``grown``: the whole portrait box or emblem
    disc and a cell around it (where covered cells may be bridged).
    """
    cw, ch = CARD_W_PX / GRID_W, CARD_H_PX / GRID_H
    yy, xx = np.mgrid[0:GRID_H, 0:GRID_W].astype(np.float64)
    centres = np.stack([(xx.ravel() + 0.5) * cw - offset[0], (yy.ravel() + 0.5) * ch - offset[1],
                        np.ones(xx.size)])
    u, v, _ = np.linalg.inv(layout) @ centres
    x0, y0, x1, y1 = (mm(c) for c in (FRONT_PORTRAIT_MM if side == "front" else BACK_EMBLEM_MM))
    if side == "front":
        bw, bh = x1 - x0, y1 - y0
        if grown:
            inside = (u > x0 - cw) & (u < x1 + cw) & (v > y0 - ch) & (v < y1 + ch)
        else:
            inside = (u > x0 + PORTRAIT_INSET * bw) & (u < x1 - PORTRAIT_INSET * bw) & (
                v > y0 + PORTRAIT_INSET * bh) & (v < y0 + HEAD_ZONE_BOTTOM * bh)
    elif side == "back":
        r = (x1 - x0) / 2
        reach = r + max(cw, ch) if grown else EMBLEM_JUDGED_R * r
        inside = np.hypot(u - (x0 + x1) / 2, v - (y0 + y1) / 2) < reach
    else:
        inside = np.zeros(u.shape, bool)
    return inside.reshape(GRID_H, GRID_W)


def _emblem_offset(red: np.ndarray, layout: np.ndarray) -> tuple[float, float]:
    """Where the emblem's red print lies (card px, from the layout's place; ``red`` is a
    bool mask at half resolution): the shift within EMBLEM_SEARCH_MM that puts the most
    red pixels inside the disc, the smallest among equals (a partly covered emblem
    keeps its place)."""
    sx, sy = float(layout[0, 0]), float(layout[1, 1])
    e0, f0, e1, f1 = (mm(c) / 2 for c in BACK_EMBLEM_MM)
    cx, cy = (e0 + e1) / 2 * sx + layout[0, 2] / 2, (f0 + f1) / 2 * sy + layout[1, 2] / 2
    r = (e1 - e0) / 2 * 0.8 * min(sx, sy)
    reach = mm(EMBLEM_SEARCH_MM) * max(sx, sy) / 2
    ys, xs = np.nonzero(red[max(0, int(cy - r - reach)):int(cy + r + reach) + 1,
                            max(0, int(cx - r - reach)):int(cx + r + reach) + 1])
    if xs.size == 0:
        return 0.0, 0.0
    xs = xs + max(0, int(cx - r - reach)) - cx
    ys = ys + max(0, int(cy - r - reach)) - cy
    best, best_off = -1, (0.0, 0.0)
    steps = np.arange(-reach, reach + 0.01, max(1.0, reach / 4))
    shifts = sorted(((dx, dy) for dx in steps for dy in steps),
                    key=lambda d: abs(d[0]) + abs(d[1]))
    for dx, dy in shifts:
        n = int((np.hypot(xs - dx, ys - dy) < r).sum())
        if n > best * 1.02:
            best, best_off = n, (2 * float(dx), 2 * float(dy))
    return best_off


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


def _fit_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Uniform scale and shift (layout px -> card px) fitted to anchor points, as
    :func:`~.base.fit_layout` fits them; None when they do not span 10 mm or the
    scale is out of its range."""
    if len(src) < 2 or np.ptp(src, axis=0).max() < 10 * PX_PER_MM:
        return None
    sc, dc = src - src.mean(0), dst - dst.mean(0)
    scale = float((sc * dc).sum() / max((sc * sc).sum(), 1e-6))
    if not 0.3 <= scale <= 1.5:
        return None
    shift = (dst - scale * src).mean(axis=0)
    return np.array([[scale, 0, shift[0]], [0, scale, shift[1]], [0, 0, 1]])


def _residual(layout: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    return float(np.abs(src @ layout[:2, :2].T + layout[:2, 2] - dst).max())


def cell_layout(ctx: AlertContext) -> np.ndarray | None:
    """The layout map the cells are placed by: the captions' uniform fit
    (:attr:`AlertContext.layout_to_card`), or their fit with a scale per axis when the
    card was read stretched along one axis (:func:`~.border_integrity.stretched_layout`:
    an outline around more than the card, or along part of it), where one scale would
    leave the cells along two of its edges on the background.

    The fit must place every caption within FIT_MM: a caption read wrongly (the number
    read in part, or a re-typed number of another length, gives its right end
    anywhere) pulls the whole fit, and the cells beside the portrait's head then lie
    on the face. Such a caption is left out (the fit to the others, when they agree);
    when no caption can be left out to make them agree, None: where the paper lies is
    not known."""
    axes = stretched_layout(ctx)
    if axes is not None:
        return axes
    layout = ctx.layout_to_card
    src, dst = anchor_pairs(ctx.lines, ctx.side)
    if len(src) < 2 or np.allclose(layout, np.eye(3)):
        return layout
    s_pts, d_pts = np.array(src, np.float64), np.array(dst, np.float64)
    limit = FIT_MM * PX_PER_MM
    if _residual(layout, s_pts, d_pts) <= limit:
        return layout
    best, best_res = None, np.inf
    if len(s_pts) > 3:  # at least three left to agree
        for k in range(len(s_pts)):
            keep = np.arange(len(s_pts)) != k
            fit = _fit_points(s_pts[keep], d_pts[keep])
            if fit is not None:
                res = _residual(fit, s_pts[keep], d_pts[keep])
                if res < best_res:
                    best, best_res = fit, res
    return best if best_res <= limit else None


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
        layout = cell_layout(ctx)
        if layout is None:
            return np.zeros_like(frame), np.zeros_like(frame)
        valid = frame & _judged_cells(layout, ctx.side)
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
        # Light washed over a tinted paper (glare, over-exposure) leaves it lighter than
        # the paper and closer to white; an object of another colour is not both.
        washed = (darker <= 0) & (np.hypot(ab[..., 0], ab[..., 1]) < np.hypot(a0, b0))
        covered = ((darker > DARKER) | ((chroma > CHROMA) & ~washed)) & valid
        zone, zone_covered = self.zone_covered(ctx, valid)
        zone &= frame & ~valid
        if zone.any():
            covered |= zone_covered & zone
            valid = valid | zone
        return covered, valid

    def zone_covered(self, ctx: AlertContext, paper: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(zone, covered): bool GRID_H × GRID_W maps of the cells judged by what the
        portrait's head or the emblem's red disc must show (see EMBLEM_* and the front's
        classes), and of those that do not show it; the ``paper`` cells give the paper's
        colour and lightness."""
        size = (GRID_W, GRID_H)
        none = np.zeros(size[::-1], bool)
        if ctx.side not in ("front", "back") or paper.sum() < 5:
            return none, none
        gain = float(np.clip(EXPOSED_WHITE / max(ctx.paper_level, 1.0), 1.0, MAX_GAIN))
        half = cv2.resize(ctx.card, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        clipped = half.min(axis=2) >= CLIPPED
        if gain > 1.01:
            half = cv2.convertScaleAbs(half, alpha=gain)
        lab = cv2.cvtColor(half, cv2.COLOR_BGR2Lab).astype(np.float32)
        cells = cv2.resize(lab, size, interpolation=cv2.INTER_AREA)
        env = cv2.resize(cv2.dilate(lab[..., 0], np.ones((ENVELOPE_PX, ENVELOPE_PX), np.uint8)),
                         size, interpolation=cv2.INTER_AREA)
        l0 = max(float(np.median(env[paper])), 1.0)
        a0 = float(np.median(cells[..., 1][paper]))
        b0 = float(np.median(cells[..., 2][paper]))
        da, db = lab[..., 1] - a0, lab[..., 2] - b0
        layout = cell_layout(ctx)
        if ctx.side == "back":
            red = da > RED_A
            zone = _zone_cells(layout, "back", _emblem_offset(red, layout))
            share = cv2.resize(red.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            unseen = cv2.resize(clipped.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            # Light washed over the print (glare) leaves it as light as the paper or
            # lighter; an object over it is darker or coloured.
            washed = cells[..., 0] > EMBLEM_WASHED_L * l0
            return zone, (share < EMBLEM_MIN_RED) & (unseen < 0.5) & ~washed
        lr = lab[..., 0] / l0
        chroma = np.hypot(da, db)
        hair = (lr < HAIR_L) & (chroma < HAIR_CHROMA)
        skin = ((da > SKIN_WARM_A) | (db > SKIN_WARM_B)) & (da > SKIN_MIN_A) & (
            db < SKIN_MAX_B) & (lr > SKIN_MIN_L) & (
            (chroma < SKIN_MAX_CHROMA) | ((db > da) & (chroma < SKIN_ORANGE_CHROMA)))
        background = ((lr > BACKGROUND_L) & (chroma < BACKGROUND_CHROMA)) | clipped
        alien = (~(hair | skin | background)).astype(np.float32)
        zone = _zone_cells(layout, "front")
        return zone, cv2.resize(alien, size, interpolation=cv2.INTER_AREA) > ALIEN_SHARE

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
        layout = cell_layout(ctx)
        if layout is None:
            return 0.0  # the captions do not agree where the card's print lies
        covered, valid = self.covered_cells(ctx)
        if not covered.any():
            return 0.0
        # A cell not judged (the emblem's ring, the portrait's edge) between covered
        # ones is covered too: an object does not stop where the judging does.
        around = cv2.filter2D(covered.astype(np.float32), -1, np.ones((3, 3), np.float32),
                              borderType=cv2.BORDER_CONSTANT)
        bridgeable = ~valid & _zone_cells(layout, ctx.side, grown=True)
        covered = covered | (bridgeable & (around >= BRIDGE_NEIGHBOURS))
        opened = cv2.morphologyEx(covered.astype(np.uint8), cv2.MORPH_OPEN,
                                  np.ones((2, 2), np.uint8), borderType=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        n, _labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
        largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
        return largest / max(1, int(valid.sum()))

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_SHARE, WIDTH_SHARE)
