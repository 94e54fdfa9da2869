"""What the alert detectors share: one photo and one read card, each view computed once.

An :class:`AlertContext` wraps the decoded photo (:class:`LoadedImage`) and the engine's
reading of one card side (:class:`CardRead`). Every derived view (grey levels, Lab,
which card pixels lie inside the frame, where the text is) is a cached property: it is
computed the first time a detector asks for it and shared by the detectors that run
after. A detector that is not requested costs nothing.

Coordinates: "card" means the canonical upright card image of
:mod:`worker.recognition.layout` (856 × 540 px, 10 px per mm); "photo" means the
decoded image as the caller sent it (EXIF orientation applied).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from worker.recognition.imageio import LoadedImage
from worker.recognition.layout import (
    BACK_TITLE_CENTRES_MM,
    CARD_H_PX,
    CARD_W_MM,
    CARD_W_PX,
    PX_PER_MM,
)
from worker.recognition.ocr import TextLine
from worker.recognition.reader import CardRead

__all__ = ["OUTLINE_EDGE_MM", "SCORE_MAX", "AlertContext", "Detector", "anchor_pairs",
           "card_outline", "logistic_score", "outline_cut"]

#: Scores are integers in [0, SCORE_MAX] (the vendor's range).
SCORE_MAX = 99
_EXPOSED_WHITE = 230.0  # grey level the paper is brought to before measuring colour
_MAX_GAIN = 4.0
_CLIPPED = 250  # min-channel level of a pixel clipped white in all three channels
CORNER_RADIUS_MM = 3.0
CUT_OFF_SHARE = 0.05  # of the outline, about 14 mm: see AlertContext.cut_off
#: Outline points closer than this to the frame edge (or beyond it) count as cut.
OUTLINE_EDGE_MM = 0.3


@runtime_checkable
class Detector(Protocol):
    """One alert: ``name`` is the alert's short name (``idcard.options.ALERTS``)."""

    name: str

    def score(self, ctx: AlertContext) -> int:
        """0..99: how likely the alert is true for this card; higher is more likely."""
        ...


def logistic_score(value: float, centre: float, width: float) -> int:
    """Map a measurement to 0..99 monotonically: ``centre`` gives 50, ``width`` is the
    distance over which the score goes from 27 to 73 (one logistic unit)."""
    if not math.isfinite(value):
        value = centre + math.copysign(50 * abs(width), value if value == value else -1)
    z = (value - centre) / width
    z = max(-50.0, min(50.0, z))
    return int(round(SCORE_MAX / (1.0 + math.exp(-z))))


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


OUTLINE_POINTS, OUTLINE_SIDES = card_outline()


def outline_cut(photo_shape: tuple[int, ...], card_to_photo: np.ndarray,
                edge_px: float) -> np.ndarray:
    """Per point of the card's outline (:func:`card_outline`) mapped into the photo by
    ``card_to_photo``: whether it lies outside the photo or within ``edge_px`` of its
    edge."""
    h, w = photo_shape[:2]
    p = cv2.perspectiveTransform(OUTLINE_POINTS.reshape(-1, 1, 2), card_to_photo).reshape(-1, 2)
    # Pixel centres run 0..w-1: the frame's edge is half a pixel further out.
    inside = np.minimum.reduce([p[:, 0] + 0.5, p[:, 1] + 0.5, w - 0.5 - p[:, 0],
                                h - 0.5 - p[:, 1]])
    return inside < edge_px


# Where captions and titles start (or are centred), in mm: text that starts a line -> the
# line's left end (x) and centre height (y) on a well-registered card.
# The reader trims a "caption + value" line at the value column (``label_merged``): its
# left end is then that cut (third number; the reader's _FRONT/_NUMBER/_BACK_VALUE_CUT_MM).
_ANCHORS = {
    "front": (("姓名", 6.5, 10.5, 15.0), ("性别", 6.5, 17.0, 15.0), ("出生", 6.5, 23.5, 15.0),
              ("住址", 6.5, 30.0, 15.0), ("公民身份号码", 6.5, 46.5, 27.2)),
    "back": (("签发机关", 17.0, 40.5, 30.0), ("有效期限", 17.0, 47.0, 30.0)),
}
_CENTRED = {"back": tuple((t, x, y) for t, (x, y) in BACK_TITLE_CENTRES_MM.items())}
# The fitted scale must lie in this range: a card read from an outline around more than
# the card (a photocopy's sheet, a whole photo) shows the card smaller, down to a third.
_SCALE_RANGE = (0.3, 1.5)


def fit_layout(lines: list[TextLine], side: str | None) -> np.ndarray:
    """Uniform scale and shift from layout px to card px, fitted to caption positions."""
    src, dst = anchor_pairs(lines, side)
    eye = np.eye(3)
    if len(src) < 2:
        return eye  # one caption is too little to move the whole layout by
    s_pts, d_pts = np.array(src, np.float64), np.array(dst, np.float64)
    if len(s_pts) == 1 or np.ptp(s_pts, axis=0).max() < 10 * PX_PER_MM:
        scale = 1.0
    else:
        sc, dc = s_pts - s_pts.mean(0), d_pts - d_pts.mean(0)
        scale = float((sc * dc).sum() / max((sc * sc).sum(), 1e-6))
        if not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
            return eye  # the anchors disagree: trust nothing rather than a wild fit
    shift = (d_pts - scale * s_pts).mean(axis=0)
    return np.array([[scale, 0, shift[0]], [0, scale, shift[1]], [0, 0, 1]])


def anchor_pairs(lines: list[TextLine], side: str | None, box_sides: bool = False,
                 ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(layout points, card points): where the recognised captions, titles and the
    number are printed on the published layout and where this card image shows them.

    A line's start is its leftmost x at its centre height (its end: the rightmost x), a
    title's place its box's centre; with ``box_sides``, the middle of its box's left
    (right) side and the mean of its corners. On a line read turned a few degrees those
    differ by up to 2 mm across, and the number's two ends at one height would hold a
    fitted turn at the read card's (border integrity's fit in the photo needs the turn)."""
    src, dst = [], []
    for ln in lines:
        text = ln.text
        if box_sides:
            q = np.asarray(ln.quad, np.float64)
            (lx, ly), (rx, ry) = (q[0] + q[3]) / 2, (q[1] + q[2]) / 2
            start, end = (float(lx), float(ly)), (float(rx), float(ry))
            centre = (float(q[:, 0].mean()), float(q[:, 1].mean()))
        else:
            start, end, centre = (ln.x0, ln.cy), (ln.x1, ln.cy), (ln.cx, ln.cy)
        for label, x, y, value_x in _ANCHORS.get(side or "", ()):
            if text.startswith(label):
                trimmed = ln.label_merged and len(text) > len(label)
                src.append(((value_x if trimmed else x) * PX_PER_MM, y * PX_PER_MM))
                dst.append(start)
        for title, x, y in _CENTRED.get(side or "", ()):
            if text == title:
                src.append((x * PX_PER_MM, y * PX_PER_MM))
                dst.append(centre)
        digits = sum(ch.isdigit() for ch in text)
        if side == "front" and digits >= 15 and ln.cy > 40 * PX_PER_MM:
            src += [(29.5 * PX_PER_MM, 46.5 * PX_PER_MM), (77.5 * PX_PER_MM, 46.5 * PX_PER_MM)]
            dst += [start, end]
    return src, dst


class AlertContext:
    """The photo and one read card side, with lazily computed shared views."""

    def __init__(self, image: LoadedImage, read: CardRead, readable: bool = True) -> None:
        self.image = image
        self.read = read
        #: False for a card the engine answers without having read any field (too
        #: blurred, a strong moiré): its side was guessed from its look, its lines are
        #: not text, so the detectors that compare the card with its layout (blocking,
        #: glare, tampering) do not judge it.
        self.readable = readable

    # --- what the engine already has -------------------------------------------------

    @property
    def photo(self) -> np.ndarray:
        """The photo, BGR uint8."""
        return self.image.bgr

    @property
    def card(self) -> np.ndarray:
        """The canonical upright card, BGR uint8, CARD_H_PX × CARD_W_PX."""
        return self.read.card

    @property
    def corners(self) -> np.ndarray:
        """tl, tr, br, bl of the upright card in photo pixels (may lie outside it)."""
        return np.asarray(self.read.corners, np.float32)

    @property
    def lines(self) -> list[TextLine]:
        """Recognised text lines, card coordinates."""
        return self.read.lines

    @property
    def side(self) -> str | None:
        return self.read.side

    @property
    def software(self) -> str | None:
        """The program that wrote the file, from its metadata (EXIF/XMP)."""
        return self.image.software

    # --- derived views ----------------------------------------------------------------

    @cached_property
    def photo_gray(self) -> np.ndarray:
        return cv2.cvtColor(self.photo, cv2.COLOR_BGR2GRAY)

    @cached_property
    def card_gray(self) -> np.ndarray:
        return cv2.cvtColor(self.card, cv2.COLOR_BGR2GRAY)

    @cached_property
    def card_lab(self) -> np.ndarray:
        """CIE Lab of the card, 8-bit OpenCV scaling: L × 255/100, a + 128, b + 128."""
        return cv2.cvtColor(self.card, cv2.COLOR_BGR2Lab)

    @cached_property
    def card_min_channel(self) -> np.ndarray:
        """Per pixel the darkest of B, G, R: ink of any colour is dark here."""
        b, g, r = cv2.split(self.card)
        return cv2.min(cv2.min(b, g), r)

    @cached_property
    def paper_level(self) -> float:
        """The card's paper brightness: 90th percentile of the min-channel in the frame."""
        sample = self.card_min_channel[::3, ::3][self.in_frame[::3, ::3]]
        return float(np.percentile(sample, 90)) if sample.size else 255.0

    @cached_property
    def chroma_spread(self) -> float:
        """How colourful the card is: the 99th percentile of the Lab a*b* distance from
        the card's median colour, after bringing its paper to a standard exposure.
        A real card is colourful (captions, portrait, emblem, tints); a copy is not."""
        # Every other pixel is plenty; pixels clipped white (glare, over-exposure) carry
        # no colour of the card and are left out.
        frame = self.card_region[::2, ::2] & (self.card_min_channel[::2, ::2] < _CLIPPED)
        if frame.sum() < 100:
            return 0.0
        # Chroma shrinks with lightness: a dim photo of a real card is as colourful as a
        # bright one once brought to the same level.
        white = max(float(np.percentile(self.card_gray[::2, ::2][frame], 95)), 1.0)
        gain = float(np.clip(_EXPOSED_WHITE / white, 1.0, _MAX_GAIN))
        card = self.card[::2, ::2]
        if gain > 1.01:
            card = cv2.convertScaleAbs(card, alpha=gain)
        lab = cv2.cvtColor(card, cv2.COLOR_BGR2Lab)
        a = lab[..., 1][frame].astype(np.float32)
        b = lab[..., 2][frame].astype(np.float32)
        d = np.hypot(a - np.median(a), b - np.median(b))
        return float(np.percentile(d, 99))

    @cached_property
    def card_region(self) -> np.ndarray:
        """bool mask (card coordinates): where the card itself is, as far as can be told.

        :attr:`in_frame`, and where the recognised captions place the card
        (:attr:`layout_to_card`, less a millimetre of margin): a card read from too
        large an outline shows background around it, which is not the card.
        """
        m = self.layout_to_card
        if np.allclose(m, np.eye(3)):
            return self.in_frame
        inset = PX_PER_MM
        corners = np.array([[inset, inset], [CARD_W_PX - inset, inset],
                            [CARD_W_PX - inset, CARD_H_PX - inset], [inset, CARD_H_PX - inset]],
                           np.float64)
        pts = (m[:2, :2] @ corners.T).T + m[:2, 2]
        mask = np.zeros((CARD_H_PX, CARD_W_PX), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        region = self.in_frame & (mask > 0)
        return region if region.mean() > 0.2 else self.in_frame

    @cached_property
    def layout_to_card(self) -> np.ndarray:
        """3×3 map from the published layout (card px) to where this card's print is.

        The identity when the reader registered the card well. A card read from a rough
        outline (cut off, partly covered, on a screen) can be shifted or scaled in the
        card image; the captions and titles the reader recognised say by how much: a
        uniform scale and a shift are fitted to them.
        """
        return fit_layout(self.lines, self.side)

    @cached_property
    def card_to_photo(self) -> np.ndarray:
        return np.linalg.inv(np.asarray(self.read.photo_to_card, np.float64))

    @cached_property
    def photo_px_per_mm(self) -> float:
        """The card's scale in the photo: photo pixels per millimetre of card."""
        c = self.corners.astype(np.float64)
        top, bottom = np.linalg.norm(c[1] - c[0]), np.linalg.norm(c[2] - c[3])
        return float((top + bottom) / 2 / CARD_W_MM)

    @cached_property
    def cut_off_share(self) -> float:
        """Share (0..1) of the card's outline cut off by the frame, as the border
        integrity alert measures it; shared with the detectors that compare the card
        with its layout, which cannot judge a card read from what is left of it."""
        from worker.recognition.alerts.border_integrity import cut_off_share

        return cut_off_share(self)

    @property
    def cut_off(self) -> bool:
        """Whether the card is cut off by the frame (:attr:`cut_off_share` above
        CUT_OFF_SHARE)."""
        return self.cut_off_share > CUT_OFF_SHARE

    @cached_property
    def in_frame(self) -> np.ndarray:
        """bool mask (card coordinates): the card pixels that lie inside the photo.

        Outside the frame the card image holds replicated border pixels, not card.
        """
        h, w = self.photo.shape[:2]
        grid = np.mgrid[0:CARD_H_PX:4, 0:CARD_W_PX:4].astype(np.float32)
        pts = np.stack([grid[1].ravel(), grid[0].ravel()], 1).reshape(-1, 1, 2) + 1.5
        p = cv2.perspectiveTransform(pts, self.card_to_photo).reshape(-1, 2)
        ok = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
        small = ok.reshape(grid.shape[1:]).astype(np.uint8)
        return cv2.resize(small, (CARD_W_PX, CARD_H_PX), interpolation=cv2.INTER_NEAREST) > 0

    @cached_property
    def text_mask(self) -> np.ndarray:
        """uint8 mask (card coordinates, 255 = text): the recognised lines' boxes."""
        mask = np.zeros((CARD_H_PX, CARD_W_PX), np.uint8)
        for ln in self.lines:
            cv2.fillPoly(mask, [np.round(ln.quad).astype(np.int32)], 255)
        return mask

    @cached_property
    def text_tilt(self) -> float:
        """Median angle (degrees, absolute) of the long recognised lines to the card's
        rows: about 0 when the reader's outline is the card's, several degrees when it
        is not (a quad along a glare spot's edge, a sheet around a tilted card)."""
        angles = []
        for ln in self.lines:
            q = np.asarray(ln.quad, np.float64)
            dx, dy = q[1] - q[0]
            if math.hypot(dx, dy) >= 3 * ln.height > 0:
                angles.append(abs(math.degrees(math.atan2(dy, dx))))
        return float(np.median(angles)) if angles else 0.0

    @cached_property
    def text_height(self) -> float:
        """Median height of the recognised lines in card pixels (3 mm when unknown)."""
        heights = [ln.height for ln in self.lines if ln.height > 0]
        return float(np.median(heights)) if heights else 3.0 * PX_PER_MM

    @cached_property
    def photo_card_patch(self) -> np.ndarray:
        """The largest square of photo pixels (grey, up to 512 px, unresampled) centred on
        the card and lying inside it; what frequency analysis needs."""
        c = self.corners.astype(np.float64)
        centre = c.mean(axis=0)
        h, w = self.photo.shape[:2]
        # Shrink a square until its corners lie inside the card quad and the photo.
        contour = c.astype(np.float32).reshape(-1, 1, 2)
        half = min(256.0, float(np.linalg.norm(c[3] - c[0])) / 2)
        while half >= 16:
            sq = centre + np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
            inside = all(cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= 2
                         for x, y in sq)
            if inside and sq[:, 0].min() >= 0 and sq[:, 1].min() >= 0 and \
                    sq[:, 0].max() < w and sq[:, 1].max() < h:
                break
            half *= 0.9
        half = int(half)
        cx, cy = int(round(centre[0])), int(round(centre[1]))
        x0, y0 = max(0, cx - half), max(0, cy - half)
        return self.photo_gray[y0:y0 + 2 * half, x0:x0 + 2 * half]
