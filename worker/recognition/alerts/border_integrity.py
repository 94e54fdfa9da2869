"""Border integrity: the card's edge or corners cut off by the frame.

What it measures: the share of the card's outline (the rounded rectangle of the card,
mapped into the photo through the read card's corners) that lies outside the photo or
within EDGE_MM of its edge, *and* where the card's paper runs on to the frame: walking
PROFILE_MM into the photo from the frame edge next to that point, the photo shows the
same paper throughout (no edge of the card, no background) and it is the card's paper
(close to the colour of the middle of the card).

Why the rounded outline and not the four corners: the corners the reader returns are
where the card's straight sides meet, outside the rounded card itself, so a card
cropped tightly but whole can have a "corner" on the frame edge. The outline is where
the card really ends. A cut-off card is read either with corners beyond the frame (the
text says where the card must be) or with one side along the frame edge (the visible
part); in both cases part of its outline is not inside the photo. In the second case
the recognised captions (where 姓名, 公民身份号码, 签发机关... are printed) still say where
the whole card lies, and that outline is checked too; the visible part is stretched to a
card's shape along the cut axis only, so the captions are fitted with a scale per axis
when those scales differ, the larger one measured by the captions, and that fit places
them closer (:func:`stretched_layout`). The reader's outline can also be read turned or
sheared a few degrees from the card, its cut-off corner then inside the frame, and the
captions fitted in the read card inherit that; so the card is also placed in the photo
by its print alone (:func:`print_outline`, a similarity fitted to the captions and
titles there). By that outline a shadow darkening the card's edge is still the card's
paper: its hue is enough there (PRINT_PAPER_AB). Why the photo must confirm it: an
outline read wrongly (a shadow, a blurred or dim card) or a whole card lying a
millimetre from the edge also puts outline points on the frame, but there the photo
shows the card's edge, or background, between the card and the frame. The photo is
judged at the exposure that puts the card's paper at a standard white: on a dim photo
the card's edge against a dark background is otherwise too small a difference. Not
judged (score 0): a read black-and-white copy (a clear one, COPY_CLEAR), where the
sheet's paper around the card is the card's own grey.
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.alerts.base import (
    OUTLINE_POINTS,
    OUTLINE_SIDES,
    AlertContext,
    anchor_pairs,
    logistic_score,
    outline_cut,
)
from worker.recognition.alerts.copy import CopyDetector
from worker.recognition.layout import CARD_H_PX, CARD_W_PX, PX_PER_MM

# Outline points closer than this to the frame edge (or beyond it) count as cut.
# (A read outline runs along the visible edge of a cut card, a pixel or two inside.)
EDGE_MM = 1.0
# Confirmation in the photo: where the outline is cut, the photo from the frame edge
# PROFILE_MM inwards must be the card's paper throughout (the card runs on past the
# frame), with no edge of the card between paper and background.
PROFILE_MM = 3.0
SMOOTH_MM = 0.15
WORK_PX_PER_MM = 6.0
PAPER_DE = 8.0  # Lab distance under which two places show the same paper
EXPOSED_WHITE, MAX_GAIN = 230.0, 4.0  # the paper's standard exposure (as blocking's)
CARD_PAPER_DE = 30.0  # ... and the looser one to the paper in the middle of the card
# The captions place the card to about a millimetre: by them, the outline must lie
# this far beyond the frame to count. (The photo must confirm it as well: a whole card
# a millimetre from the frame shows its edge and the background there. 2 mm missed the
# mildest cuts, 2.5 mm at a rotated card's corner, where the outline passes the frame
# by less than that.)
LAYOUT_SLACK_MM = 1.0
# Captions this far (mm) from where the outline puts them mean the outline is wrong ...
MISREAD_MM = 4.0
# ... when at least this many anchors say so. Two (the back's two captions, or one and a
# title) fit a scale and a shift with nothing left over to check them: one box misplaced
# (a caption merged with its value and trimmed to the value's column, a caption split in
# two) moves that fit by 5-12 mm, and the read outline, cut where the frame cuts the
# card, was then thrown away (20 mm cuts of backs scored 0-5). With fewer, the read
# outline still counts (the photo must still confirm it there).
MISREAD_ANCHORS = 3
# A card cut off is often read from its visible part, stretched to a card's shape: its
# print is then larger along the cut axis only. When one scale does not fit the
# captions, a scale per axis in this range is fitted (1 along an axis they do not span
# by AXIS_SPAN_MM); the largest cut (20 mm of 54) stretches by 1.6.
AXIS_SCALE_RANGE = (0.6, 2.5)
AXIS_SPAN_MM = 10.0
AXIS_FIT_MM = 2.0  # ... and each caption must then lie within this of its fitted place
AXIS_DIFFER = 0.08  # scales further apart than this: the per-axis fit is used
# The card placed by its print alone: a turn, a scale and a shift (a similarity) fitted in
# the photo to the recognised captions and titles, which the layout fixes on the card.
# It needs PRINT_ANCHORS of them spanning AXIS_SPAN_MM, each within PRINT_FIT_MM of its
# fitted place (a misread caption, a card bent by perspective: no answer).
PRINT_ANCHORS = 3
PRINT_FIT_MM = 1.5
# Where the print places the card, the card's paper is told by its colour more loosely:
# a shadow or the light's fall-off darkens the paper at the card's edge well below the
# middle of the card (30-45 Lab units of lightness on the tuning photos) but keeps its
# hue; a background that happens to be as plain as the paper is ruled out by the print.
PRINT_PAPER_AB = 8.0  # a*b* distance to the middle of the card's paper, at most
PRINT_PAPER_L = (-60.0, 15.0)  # lightness difference to it (8-bit L), in this range
# Not judged on a read copy: the copy alert's score at least this (a chroma spread under
# about 6.8). Copies score 95-99 (spread 0-6); a front cut off by 14-20 mm and read from
# its part without the portrait, or with background, measured 7.3-9.5 (copy 50-85) and
# was not judged although 21-40 % of its outline was cut.
COPY_CLEAR = 90
# Score 50 at this share of the outline cut off; 2 % of the outline is ~5.5 mm.
CENTRE_SHARE = 0.06
WIDTH_SHARE = 0.01


def _photo_lab(ctx: AlertContext) -> tuple[np.ndarray, float]:
    """The photo in Lab at about WORK_PX_PER_MM, lightly smoothed (fine print and noise
    fade, a card's edge stays sharp); and its scale from photo pixels."""
    s = min(1.0, WORK_PX_PER_MM / max(ctx.photo_px_per_mm, 1e-3))
    small = ctx.photo if s >= 1 else cv2.resize(ctx.photo, None, fx=s, fy=s,
                                                interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), SMOOTH_MM * ctx.photo_px_per_mm * s)
    # A dim photo shrinks every difference (the card's edge against a dark background
    # too): the photo is brought to the exposure that puts the card's paper at
    # EXPOSED_WHITE first, as the card itself is for colour (its card_paper_lab too).
    gain = _gain(ctx)
    if gain > 1.01:
        small = cv2.convertScaleAbs(small, alpha=gain)
    return cv2.cvtColor(small, cv2.COLOR_BGR2Lab).astype(np.float32), s


def _gain(ctx: AlertContext) -> float:
    return float(np.clip(EXPOSED_WHITE / max(ctx.paper_level, 1.0), 1.0, MAX_GAIN))


def _paper_runs_on(ctx: AlertContext, card_to_photo: np.ndarray, cut: np.ndarray,
                   lab: np.ndarray, s: float, shaded: bool = False) -> np.ndarray:
    """``cut`` kept only where the card's paper runs on to the frame: walking in from the
    frame edge next to the cut point, the photo shows no edge (no change from the paper
    PROFILE_MM further in) and that paper is the card's (``shaded``: or the card's
    paper's hue, darker, as by the outline the print places, PRINT_PAPER_AB/_L)."""
    idx = np.flatnonzero(cut)
    out = np.zeros_like(cut)
    if idx.size == 0:
        return out
    h, w = lab.shape[:2]
    p = cv2.perspectiveTransform(OUTLINE_POINTS[idx].reshape(-1, 1, 2), card_to_photo)
    p = p.reshape(-1, 2) * s
    px_mm = ctx.photo_px_per_mm * s
    # The frame edge nearest each point, and the way into the photo from it.
    dist = np.stack([p[:, 1], w - 1 - p[:, 0], h - 1 - p[:, 1], p[:, 0]], axis=1)
    side = np.argmin(dist, axis=1)
    step = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], np.float64)[side]
    start = np.clip(p, [0, 0], [w - 1, h - 1])
    start[side == 0, 1], start[side == 1, 0] = 0, w - 1
    start[side == 2, 1], start[side == 3, 0] = h - 1, 0
    n = max(2, int(round(PROFILE_MM * px_mm)))
    t = np.arange(n + 1)[None, :, None]
    walk = np.round(start[:, None, :] + step[:, None, :] * t).astype(int)
    walk[..., 0] = np.clip(walk[..., 0], 0, w - 1)
    walk[..., 1] = np.clip(walk[..., 1], 0, h - 1)
    profile = lab[walk[..., 1], walk[..., 0]]  # points × (n + 1) × 3
    inner = profile[:, -max(2, n // 3):].mean(axis=1)
    change = np.linalg.norm(profile - inner[:, None, :], axis=2).max(axis=1)
    card = card_paper_lab(ctx)
    paper = np.linalg.norm(inner - card, axis=1) < CARD_PAPER_DE
    if shaded:
        dl = inner[:, 0] - card[0]
        paper |= ((np.linalg.norm(inner[:, 1:] - card[1:], axis=1) < PRINT_PAPER_AB)
                  & (dl > PRINT_PAPER_L[0]) & (dl < PRINT_PAPER_L[1]))
    out[idx] = (change < PAPER_DE) & paper
    return out


def card_paper_lab(ctx: AlertContext) -> np.ndarray:
    """Lab (OpenCV 8-bit scaling) of the card's paper: the lighter half of the middle of
    the card, print removed by a median filter."""
    h, w = CARD_H_PX, CARD_W_PX
    middle = ctx.card[h // 4:3 * h // 4:2, w // 4:3 * w // 4:2]
    gain = _gain(ctx)
    if gain > 1.01:
        middle = cv2.convertScaleAbs(middle, alpha=gain)
    lab = cv2.cvtColor(cv2.medianBlur(middle, 5), cv2.COLOR_BGR2Lab).reshape(-1, 3)
    light = lab[lab[:, 0] >= np.median(lab[:, 0])]
    return np.median(light, axis=0).astype(np.float32)


def fit_layout_axes(ctx: AlertContext) -> np.ndarray:
    """Layout px -> card px with a scale per axis and a shift, fitted to the recognised
    captions (:func:`~.base.anchor_pairs`); the identity when they are too few, do not
    fit, or say nothing else than the uniform fit."""
    src, dst = anchor_pairs(ctx.lines, ctx.side)
    eye = np.eye(3)
    if len(src) < 2:
        return eye
    s_pts, d_pts = np.array(src, np.float64), np.array(dst, np.float64)
    scale, shift = np.ones(2), np.zeros(2)
    for k in range(2):
        sc, dc = s_pts[:, k] - s_pts[:, k].mean(), d_pts[:, k] - d_pts[:, k].mean()
        if np.ptp(s_pts[:, k]) >= AXIS_SPAN_MM * PX_PER_MM:
            scale[k] = float((sc * dc).sum() / max((sc * sc).sum(), 1e-6))
        if not AXIS_SCALE_RANGE[0] <= scale[k] <= AXIS_SCALE_RANGE[1]:
            return eye
        shift[k] = float((d_pts[:, k] - scale[k] * s_pts[:, k]).mean())
    residual = np.abs(s_pts * scale + shift - d_pts).max()
    if residual > AXIS_FIT_MM * PX_PER_MM * max(1.0, float(scale.max())):
        return eye
    return np.array([[scale[0], 0, shift[0]], [0, scale[1], shift[1]], [0, 0, 1]])


def _caption_residual(ctx: AlertContext, layout: np.ndarray) -> float:
    """The largest distance (card px) of a recognised caption from where ``layout``
    puts it."""
    src, dst = anchor_pairs(ctx.lines, ctx.side)
    if not src:
        return 0.0
    s_pts, d_pts = np.array(src, np.float64), np.array(dst, np.float64)
    return float(np.abs(s_pts @ layout[:2, :2].T + layout[:2, 2] - d_pts).max())


def stretched_layout(ctx: AlertContext) -> np.ndarray | None:
    """The per-axis fit (:func:`fit_layout_axes`) when the captions say the card was
    read stretched along one axis: its two scales differ by more than AXIS_DIFFER *and*
    it places the captions closer than the uniform fit does (an outline that is not a
    rectangle on the card, a perspective misread, also gives scales that differ, and
    then fits no better), and the larger scale is measured; else None."""
    axes = fit_layout_axes(ctx)
    if abs(axes[0, 0] - axes[1, 1]) <= AXIS_DIFFER:
        return None
    # Read from its visible part, the card is stretched along the cut: the larger
    # scale must be one the captions measured (an axis they do not span keeps 1, and
    # an outline around more than the card shrinks the other).
    src, _dst = anchor_pairs(ctx.lines, ctx.side)
    k = int(np.argmax([axes[0, 0], axes[1, 1]]))
    if np.ptp(np.array(src, np.float64)[:, k]) < AXIS_SPAN_MM * PX_PER_MM:
        return None
    if _caption_residual(ctx, axes) >= _caption_residual(ctx, ctx.layout_to_card):
        return None
    return axes


def print_outline(ctx: AlertContext) -> tuple[np.ndarray, float] | None:
    """Card px -> photo px placing the card by its print alone, and its scale (photo px
    per mm): the similarity that maps the recognised captions' and titles' places on
    the layout (:func:`~.base.anchor_pairs`, by their boxes' sides) to where the photo
    shows them. None when they are fewer than PRINT_ANCHORS, span less than
    AXIS_SPAN_MM, or one lies further than PRINT_FIT_MM from its fitted place.

    Why: the reader's outline of a cut-off card can be read sheared or turned a few
    degrees from the card (its visible part is not card-shaped), which puts the cut-off
    corner inside the frame; the print is where the card is, whatever the outline."""
    src, dst = anchor_pairs(ctx.lines, ctx.side, box_sides=True)
    if len(src) < PRINT_ANCHORS:
        return None
    s_pts = np.array(src, np.float64)
    if np.ptp(s_pts, axis=0).max() < AXIS_SPAN_MM * PX_PER_MM:
        return None
    d_pts = cv2.perspectiveTransform(np.array(dst, np.float64).reshape(-1, 1, 2),
                                     ctx.card_to_photo).reshape(-1, 2)
    n = len(s_pts)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.c_[s_pts[:, 0], -s_pts[:, 1], np.ones(n), np.zeros(n)]
    a[1::2] = np.c_[s_pts[:, 1], s_pts[:, 0], np.zeros(n), np.ones(n)]
    (c, k, tx, ty), *_ = np.linalg.lstsq(a, d_pts.reshape(-1), rcond=None)
    px_mm = float(np.hypot(c, k)) * PX_PER_MM
    if not np.isfinite(px_mm) or px_mm <= 1e-3:
        return None
    fitted = a @ np.array([c, k, tx, ty])
    residual = np.linalg.norm((fitted - d_pts.reshape(-1)).reshape(-1, 2), axis=1).max()
    if residual > PRINT_FIT_MM * px_mm:
        return None
    return np.array([[c, -k, tx], [k, c, ty], [0.0, 0.0, 1.0]]), px_mm


def cut_off_share(ctx: AlertContext) -> float:
    """Share (0..1) of the card's outline outside the photo or on its edge where the
    card's paper runs on to the frame: the largest of what the read outline, the
    printed captions in the read card and the print alone in the photo
    (:func:`print_outline`) say."""
    px_mm = ctx.photo_px_per_mm
    lab, s = _photo_lab(ctx)
    by_print = 0.0
    placed = print_outline(ctx)
    if placed is not None:
        m, print_px_mm = placed
        cut = outline_cut(ctx.photo.shape, m, -LAYOUT_SLACK_MM * print_px_mm)
        by_print = float(_paper_runs_on(ctx, m, cut, lab, s, shaded=True).mean())
    by_outline = outline_cut(ctx.photo.shape, ctx.card_to_photo, max(EDGE_MM * px_mm, 1.0))
    # A photo cropped to the card has all four sides on the frame: the card is
    # whole, only framed tightly (scans, auto-cropped uploads).
    if all(by_outline[OUTLINE_SIDES == k].mean() > 0.8 for k in range(4)):
        by_outline[:] = False
    by_outline = _paper_runs_on(ctx, ctx.card_to_photo, by_outline, lab, s)
    # Where the captions put the card: a card cut off is often read from the part
    # that is left, and its outline then ends at the frame, inside the real card.
    layout = ctx.layout_to_card
    axes = stretched_layout(ctx)
    if axes is not None:
        # The captions say the card was read stretched along one axis.
        layout = axes
    if np.allclose(layout, np.eye(3)):
        return max(float(by_outline.mean()), by_print)
    by_layout = outline_cut(ctx.photo.shape, ctx.card_to_photo @ layout,
                            -LAYOUT_SLACK_MM * px_mm)
    by_layout = _paper_runs_on(ctx, ctx.card_to_photo @ layout, by_layout, lab, s)
    off_mm = max(abs(layout[0, 0] - 1) * CARD_W_PX, abs(layout[0, 2]),
                 abs(layout[1, 2])) / PX_PER_MM
    if off_mm > MISREAD_MM and len(anchor_pairs(ctx.lines, ctx.side)[0]) >= MISREAD_ANCHORS:
        # The read outline is not where the card is: the print alone decides.
        return max(float(by_layout.mean()), by_print)
    return float(max(by_outline.mean(), by_layout.mean(), by_print))


class BorderIntegrityDetector:
    name = "border_integrity"

    def measure(self, ctx: AlertContext) -> float:
        """Share (0..1) of the card's outline cut off (:func:`cut_off_share`); 0 for a
        read black-and-white copy: the sheet's paper lies around the card in the
        card's own grey, so "the card's paper runs on to the frame" says nothing there.
        Only a clear copy (COPY_CLEAR): a card cut off is read from what is left of it,
        and that part can be as pale as a copy's borderline. (A card nothing was read
        from is not judged a copy here: its colour is measured through the locator's
        rough outline.)"""
        if ctx.readable and CopyDetector().score(ctx) >= COPY_CLEAR:
            return 0.0
        return ctx.cut_off_share

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_SHARE, WIDTH_SHARE)
