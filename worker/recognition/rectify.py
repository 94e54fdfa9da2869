"""Warp a located card to the canonical upright card image and back."""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.layout import CARD_H_PX, CARD_W_PX

CANONICAL = np.array(
    [[0, 0], [CARD_W_PX, 0], [CARD_W_PX, CARD_H_PX], [0, CARD_H_PX]], dtype=np.float32
)


def rectify_card(bgr: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The card under ``corners`` (tl, tr, br, bl) as a CARD_W_PX × CARD_H_PX image.

    Returns the image and the 3×3 homography from photo to card coordinates.
    """
    m = cv2.getPerspectiveTransform(np.asarray(corners, dtype=np.float32), CANONICAL)
    card = cv2.warpPerspective(
        bgr, m, (CARD_W_PX, CARD_H_PX), flags=cv2.INTER_AREA
        if _shrinks(corners) else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE,
    )
    return card, m


def _shrinks(corners: np.ndarray) -> bool:
    c = np.asarray(corners, dtype=np.float32)
    return float(np.linalg.norm(c[1] - c[0])) > CARD_W_PX * 1.3


def rotate_180(corners: np.ndarray) -> np.ndarray:
    """The same card with its top and bottom swapped."""
    return np.roll(np.asarray(corners, dtype=np.float32), 2, axis=0)


def to_photo(points: np.ndarray, photo_to_card: np.ndarray) -> np.ndarray:
    """Card coordinates → photo coordinates."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 1, 2)
    inv = np.linalg.inv(photo_to_card)
    return cv2.perspectiveTransform(pts, inv).reshape(-1, 2)
