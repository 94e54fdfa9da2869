"""Border integrity: the card's edge or corners cut off by the frame.

What it measures: the share of the card's outline (the rounded rectangle of the card,
mapped into the photo through the read card's corners) that lies outside the photo or
on its edge, within EDGE_MM of it.

Why the rounded outline and not the four corners: the corners the reader returns are
where the card's straight sides meet, outside the rounded card itself, so a card
cropped tightly but whole can have a "corner" on the frame edge. The outline is where
the card really ends. A cut-off card is read either with corners beyond the frame (the
text says where the card must be) or with one side along the frame edge (the visible
part); in both cases part of its outline is not inside the photo. In the second case
the recognised captions (where 姓名, 公民身份号码, 签发机关... are printed) still say where
the whole card lies, and that outline is checked too.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.layout import CARD_H_PX, CARD_W_PX, PX_PER_MM

CORNER_RADIUS_MM = 3.0
# Outline points closer than this to the frame edge (or beyond it) count as cut.
EDGE_MM = 0.3
# The captions place the card to a millimetre or two: by them, the outline must lie
# this far beyond the frame to count.
LAYOUT_SLACK_MM = 2.0
# Captions this far (mm) from where the outline puts them mean the outline is wrong.
MISREAD_MM = 4.0
# Score 50 at this share of the outline cut off; 2 % of the outline is ~5.5 mm.
CENTRE_SHARE = 0.09
WIDTH_SHARE = 0.015


def card_outline(step_px: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Points along the card's rounded outline in card coordinates (N × 2, float32), and
    for each the side it belongs to (0 top, 1 right, 2 bottom, 3 left; corners: -1)."""
    r = CORNER_RADIUS_MM * PX_PER_MM
    w, h = float(CARD_W_PX), float(CARD_H_PX)
    pts: list[tuple[float, float]] = []
    sides: list[int] = []
    for x in np.arange(r, w - r, step_px):
        pts += [(x, 0.0), (x, h)]
        sides += [0, 2]
    for y in np.arange(r, h - r, step_px):
        pts += [(0.0, y), (w, y)]
        sides += [3, 1]
    n = max(4, int(math.pi / 2 * r / step_px))
    for cx, cy, a0 in ((r, r, math.pi), (w - r, r, 1.5 * math.pi), (w - r, h - r, 0.0),
                       (r, h - r, 0.5 * math.pi)):
        for t in np.linspace(a0, a0 + math.pi / 2, n, endpoint=False):
            pts.append((cx + r * math.cos(t), cy + r * math.sin(t)))
            sides.append(-1)
    return np.array(pts, np.float32), np.array(sides)


_OUTLINE, _SIDES = card_outline()


def _cut(ctx: AlertContext, card_to_photo: np.ndarray, edge_px: float) -> np.ndarray:
    """Per outline point: lies outside the photo or within ``edge_px`` of its edge."""
    h, w = ctx.photo.shape[:2]
    p = cv2.perspectiveTransform(_OUTLINE.reshape(-1, 1, 2), card_to_photo).reshape(-1, 2)
    # Pixel centres run 0..w-1: the frame's edge is half a pixel further out.
    inside = np.minimum.reduce([p[:, 0] + 0.5, p[:, 1] + 0.5, w - 0.5 - p[:, 0],
                                h - 0.5 - p[:, 1]])
    return inside < edge_px


class BorderIntegrityDetector:
    name = "border_integrity"

    def measure(self, ctx: AlertContext) -> float:
        """Share (0..1) of the card's outline outside the photo or on its edge: the
        larger of what the read outline and what the printed captions say."""
        px_mm = ctx.photo_px_per_mm
        by_outline = _cut(ctx, ctx.card_to_photo, max(EDGE_MM * px_mm, 1.0))
        # A photo cropped to the card has all four sides on the frame: the card is
        # whole, only framed tightly (scans, auto-cropped uploads).
        if all(by_outline[_SIDES == s].mean() > 0.8 for s in range(4)):
            by_outline[:] = False
        # Where the captions put the card: a card cut off is often read from the part
        # that is left, and its outline then ends at the frame, inside the real card.
        layout = ctx.layout_to_card
        if np.allclose(layout, np.eye(3)):
            return float(by_outline.mean())
        by_layout = _cut(ctx, ctx.card_to_photo @ layout, -LAYOUT_SLACK_MM * px_mm)
        off_mm = max(abs(layout[0, 0] - 1) * CARD_W_PX, abs(layout[0, 2]),
                     abs(layout[1, 2])) / PX_PER_MM
        if off_mm > MISREAD_MM:
            # The read outline is not where the card is: the captions alone decide.
            return float(by_layout.mean())
        return float(max(by_outline.mean(), by_layout.mean()))

    def score(self, ctx: AlertContext) -> int:
        return logistic_score(self.measure(ctx), CENTRE_SHARE, WIDTH_SHARE)
