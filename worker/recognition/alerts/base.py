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
from worker.recognition.layout import CARD_H_PX, CARD_W_MM, CARD_W_PX, PX_PER_MM
from worker.recognition.ocr import TextLine
from worker.recognition.reader import CardRead

__all__ = ["SCORE_MAX", "AlertContext", "Detector", "logistic_score"]

#: Scores are integers in [0, SCORE_MAX] (the vendor's range).
SCORE_MAX = 99


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


class AlertContext:
    """The photo and one read card side, with lazily computed shared views."""

    def __init__(self, image: LoadedImage, read: CardRead) -> None:
        self.image = image
        self.read = read

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
        """CIE Lab of the card as float32 (L 0..100, a and b about -128..127)."""
        return cv2.cvtColor(self.card.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)

    @cached_property
    def card_min_channel(self) -> np.ndarray:
        """Per pixel the darkest of B, G, R: ink of any colour is dark here."""
        return self.card.min(axis=2)

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
