"""Tampering: an edited image, a field pasted over or re-typed, or an editor's metadata.

What it measures, two pieces of evidence, the stronger counts:

- **Metadata.** The file says an image editor wrote it (EXIF ``Software`` or XMP
  ``CreatorTool``: Photoshop, GIMP, Meitu/美图, PicsArt, Snapseed, ...). A phone's
  camera firmware writes its own name there; that is not an editor.
- **A pasted patch.** Per text line, the fine texture of the paper around the print
  (guilloche lines, sensor noise: the residual of a 1.2 px Gaussian, on pixels away
  from ink) inside a box hugging the line, against a ring 1.5-3.5 mm further out (or
  the card's median, if that is plainer); only lines where the holder's data is
  printed count. A field covered with a flat patch of paper colour and typed again has
  lost that texture right around it: the log ratio inside/ring drops well below zero.
  Every texture figure carries TEXTURE_FLOOR, what JPEG leaves on flat paper, so that
  plain stretches of a card (no guilloche there) do not give ratios of two nothings.
  Lines whose paper is clipped white, or brighter than the ring's paper, are not
  judged: glare washes texture out too, but it adds light, while a patch has the
  colour of the paper between the print's lines.

Why: the vendor's own alert "does not support fine-grained editing" (document); what
it catches, and what this catches, is the cheap forgery: cover a field, type another
value, save. The patch and the new text are made in the editor, not photographed, so
they lack the photo's texture. Fonts and ink were tried as evidence too, but a
card's own lines vary as much (bold numbers, blurred thin captions) as a re-typed one.
A patch in a stretch of the card without security print, or on a faint, over-exposed
card, leaves no texture to miss and is not seen.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, logistic_score
from worker.recognition.layout import mm
from worker.recognition.ocr import TextLine

EDITORS = re.compile(
    r"photoshop|gimp|lightroom|meitu|美图|美颜|醒图|picsart|snapseed|paint\.net|pixlr|"
    r"canva|affinity|acdsee|光影魔术手|fotor|photoscape|polarr|facetune|illustrator|"
    r"pixelmator|photodirector|photo director|inshot|picmonkey|krita|photopea",
    re.IGNORECASE,
)
SCORE_EDITOR = 95

MIN_LINE_HEIGHT = 14  # card px
RESIDUAL_SIGMA = 1.2
INK_MARGIN = 25  # grey levels under the local paper level that count as ink
INNER_PAD = 3  # px around the line box
RING_GAP, RING_OUT = 15, 35  # px: the ring around a line starts and ends here
MIN_PIXELS = 300
# Grey levels added to every texture figure: what JPEG and a little noise leave on flat
# paper. Below it a ratio of two textures is a ratio of two nothings.
TEXTURE_FLOOR = 0.4
CLIPPED = 250  # grey level: over-exposed, the texture is gone whatever was there
MAX_CLIPPED = 0.2  # share of a line's paper that may be clipped for it to be judged
BRIGHTER = 4.0  # grey levels over the ring's paper (its 90th percentile): glare, not paste
# Score 50 at this log ratio of texture inside a line's box to around it; genuine
# cards measure 0 to -0.2, a flat patch -0.3 and below.
CENTRE_LOG_RATIO = -0.25
WIDTH_LOG_RATIO = 0.05


def _in_value_zone(ln: TextLine, side: str | None) -> bool:
    """Whether a line lies where the holder's data is printed (what a forger changes),
    not on the titles, the emblem or the portrait, whose own texture differs."""
    if len(ln.text) < 2:
        return False
    if side == "front":
        return ln.cy >= mm(42) or (ln.x0 >= mm(14) and ln.x1 <= mm(56))
    return ln.cy >= mm(35)


class TamperingDetector:
    name = "tampering"

    def measure(self, ctx: AlertContext) -> float:
        """The lowest log ratio of paper texture inside a value line's box to around it
        (0 when no line can be judged; a pasted patch measures well below zero)."""
        return self._texture(ctx)

    def score(self, ctx: AlertContext) -> int:
        if EDITORS.search(ctx.software or ""):
            return SCORE_EDITOR
        if not ctx.readable:
            return 0  # no field read: no value line to judge a patch by
        return logistic_score(-self._texture(ctx), -CENTRE_LOG_RATIO, WIDTH_LOG_RATIO)

    # --- the pasted patch --------------------------------------------------------------

    def _texture(self, ctx: AlertContext) -> float:
        g = ctx.card_gray.astype(np.float32)
        h, w = g.shape
        residual = np.abs(g - cv2.GaussianBlur(g, (0, 0), RESIDUAL_SIGMA))
        paper = cv2.dilate(g, np.ones((15, 15), np.uint8))
        ink = cv2.dilate((g < paper - INK_MARGIN).astype(np.uint8), np.ones((5, 5), np.uint8))
        lines = np.zeros((h, w), np.uint8)
        for ln in ctx.lines:
            cv2.fillPoly(lines, [np.round(ln.quad).astype(np.int32)], 1)
        near_lines = cv2.dilate(lines, np.ones((11, 11), np.uint8)) > 0
        background = (ink == 0) & ctx.in_frame
        # The paper's texture over the whole card: a line in a naturally plain stretch
        # of paper must not look pasted just because its neighbourhood is busier.
        plain = residual[background & ~near_lines]
        e_card = float(np.median(plain)) + TEXTURE_FLOOR if plain.size else float("inf")
        lowest = 0.0
        for ln in ctx.lines:
            if ln.height < MIN_LINE_HEIGHT or ln.x1 - ln.x0 < 1.5 * ln.height:
                continue
            if not _in_value_zone(ln, ctx.side):
                continue
            x0, y0 = int(ln.x0) - INNER_PAD, int(ln.y0) - INNER_PAD
            x1, y1 = int(ln.x1) + INNER_PAD, int(ln.y1) + INNER_PAD
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                continue
            inner = background[y0:y1, x0:x1]
            ox0, oy0 = max(0, x0 - RING_OUT), max(0, y0 - RING_OUT)
            ox1, oy1 = min(w, x1 + RING_OUT), min(h, y1 + RING_OUT)
            ring = background[oy0:oy1, ox0:ox1] & ~near_lines[oy0:oy1, ox0:ox1]
            gap = np.zeros_like(ring)
            gy0, gx0 = max(0, y0 - RING_GAP) - oy0, max(0, x0 - RING_GAP) - ox0
            gap[gy0:y1 + RING_GAP - oy0, gx0:x1 + RING_GAP - ox0] = True
            ring &= ~gap
            if inner.sum() < MIN_PIXELS or ring.sum() < MIN_PIXELS:
                continue
            # Glare washes texture out too, but it brightens the paper beyond its own
            # white; a patch has the colour of the paper between the print's fine lines
            # (the ring's brightest), which is lighter than the ring on average.
            paper_in = g[y0:y1, x0:x1][inner]
            if float((paper_in >= CLIPPED).mean()) > MAX_CLIPPED:
                continue
            level_in = float(np.median(paper_in))
            paper_ring = float(np.percentile(g[oy0:oy1, ox0:ox1][ring], 90))
            if level_in > paper_ring + BRIGHTER:
                continue
            e_in = float(np.median(residual[y0:y1, x0:x1][inner])) + TEXTURE_FLOOR
            e_ring = float(np.median(residual[oy0:oy1, ox0:ox1][ring])) + TEXTURE_FLOOR
            lowest = min(lowest, float(np.log(e_in / min(e_ring, e_card))))
        return lowest
