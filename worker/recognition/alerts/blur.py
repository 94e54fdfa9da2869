"""Blur: a card out of focus or shaken, judged against the size of its own print.

What it measures: the width of the edges of the printed text relative to the print's
size. Per recognised line, edge width is the line's contrast (97th minus 3rd
percentile of grey) divided by its steepest gradient (99th percentile), taken
separately over the pixels whose gradient points in each of four directions; the
widest direction counts, so that motion blur, which smears the edges across its path
only, is seen. The card's value is the median over its lines, divided by the height
of the card's value text (3 mm) in the card image: TEXT_MM through the layout's scale
fitted to the captions (:attr:`AlertContext.layout_to_card`; 1 when not fitted).

Why relative to the print: the same few pixels of softness are harmless on a card that
fills a 4000 px photo and fatal on one 500 px wide. The rectified card has a fixed
print size, so edge width over the print's height measures blur in the unit that
decides readability. The print's height comes from the layout, not from each line's
detected box: a blur smears every edge by the same pixels whatever the line's font
size, and the detector's boxes vary (a title twice the size, a box taking in a second
line) where the card's scale does not. Contrast cancels out of the ratio, so dim,
low-contrast and glared lines measure the same as bright ones.
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.layout import PX_PER_MM

MIN_LINE_HEIGHT = 12  # card px
MIN_CONTRAST = 10  # grey levels: a line fainter than this says nothing about focus
TEXT_MM = 3.0  # height of the card's value text
# Score 50 at this edge width / value text height (calibration seeds: slight blur up to
# 0.168, blur of 0.10 text heights from 0.185).
CENTRE_RATIO = 0.176
WIDTH_RATIO = 0.008


def _edge_width(crop: np.ndarray) -> float | None:
    """Widest edge width (px) over four gradient directions in a line's crop."""
    g = cv2.GaussianBlur(crop.astype(np.float32), (0, 0), 0.7)[2:-2, 2:-2]
    lo, hi = np.percentile(g, (3, 97))
    if hi - lo < MIN_CONTRAST:
        return None
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8
    mag = cv2.magnitude(gx, gy)
    ax, ay = np.abs(gx), np.abs(gy)
    # Gradient direction in four bins (0, 45, 90, 135 degrees, modulo 180): motion blur
    # widens the edges whose normal lies along the motion, and only those.
    horizontal = ax > 2.414 * ay
    vertical = ay > 2.414 * ax
    diagonal = ~horizontal & ~vertical
    same_sign = (gx * gy) > 0
    widths = []
    for sel in (horizontal, diagonal & same_sign, vertical, diagonal & ~same_sign):
        m = mag[sel]
        if m.size >= 20:
            widths.append((hi - lo) / max(1e-3, float(np.percentile(m, 99))))
    return max(widths) if widths else None


class BlurDetector:
    name = "blur"

    def measure(self, ctx: AlertContext) -> float:
        """Median over lines of edge width / value text height (NaN without usable
        lines)."""
        gray = ctx.card_gray
        text_px = TEXT_MM * PX_PER_MM * float(ctx.layout_to_card[0, 0])
        ratios = []
        for ln in ctx.lines:
            h = ln.height
            if h < MIN_LINE_HEIGHT or ln.x1 - ln.x0 < 2 * h:
                continue
            x0, y0 = max(0, int(ln.x0)), max(0, int(ln.y0))
            x1, y1 = int(ln.x1), int(ln.y1)
            if (y1 - y0) * (x1 - x0) < 100 or not ctx.in_frame[y0:y1, x0:x1].all():
                continue
            width = _edge_width(gray[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2])
            if width is not None:
                ratios.append(width / text_px)
        return float(np.median(ratios)) if ratios else float("nan")

    def score(self, ctx: AlertContext) -> int:
        value = self.measure(ctx)
        if value != value:  # no line to judge by: a card read without lines is rare
            return 0
        return logistic_score(value, CENTRE_RATIO, WIDTH_RATIO)
