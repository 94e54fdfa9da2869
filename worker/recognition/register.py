"""Re-register a card from its own text when its outline was found only roughly.

The locator can settle on a shadow, on a sheet the card lies on, or (with nothing
better) on the whole photo. The text then sits away from where the layout puts it. A
few lines are reliable landmarks — the ID number's two ends, where the name and birth
values start, the back's titles and validity line — so a similarity transform from where
they were found to where they belong gives a better card outline to read again.
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.recognition.fields import CardFields
from worker.recognition.layout import (
    FRONT_BIRTH_ROW_Y_MM,
    FRONT_NAME_ROW_Y_MM,
    FRONT_VALUE_X_MM,
    mm,
)
from worker.recognition.ocr import TextLine
from worker.recognition.rectify import CANONICAL, to_photo

# Landmarks: field → (where its left end's middle belongs, where its right end's
# middle belongs or None), in mm on the upright card.
FRONT_LANDMARKS = {
    "number": ((29.5, 46.5), (77.5, 46.5)),
    "name": ((FRONT_VALUE_X_MM, FRONT_NAME_ROW_Y_MM), None),
    "birth": ((FRONT_VALUE_X_MM, FRONT_BIRTH_ROW_Y_MM), None),
}
BACK_LANDMARKS = {
    "valid_from": ((31.0, 47.0), None),
    "issue": ((31.0, 40.5), None),
}
BACK_TITLES = {"中华人民共和国": (53.0, 11.0), "居民身份证": (53.0, 21.0)}
# Below this, re-reading would not change what is read.
GOOD_ENOUGH_MM = 1.5


def _left_mid(q: np.ndarray) -> np.ndarray:
    return (q[0] + q[3]) / 2


def _right_mid(q: np.ndarray) -> np.ndarray:
    return (q[1] + q[2]) / 2


def _pairs(side: str, fields: CardFields, lines: list[TextLine]) -> list[tuple[np.ndarray, tuple]]:
    pairs = []
    marks = FRONT_LANDMARKS if side == "front" else BACK_LANDMARKS
    for name, (left, right) in marks.items():
        q = fields.quads.get(name)
        if q is None or not fields.values.get(name):
            continue
        # A box cut where the label column ends says nothing about where the value starts.
        if name not in fields.label_merged:
            pairs.append((_left_mid(q), left))
        if right is not None:
            pairs.append((_right_mid(q), right))
    if side == "back":
        for ln in lines:
            for title, centre in BACK_TITLES.items():
                if ln.text == title:
                    pairs.append((ln.quad.mean(axis=0), centre))
    return pairs


def landmark_error(side: str, fields: CardFields, lines: list[TextLine]) -> float:
    """Largest distance (px) of a landmark from where the layout puts it; inf if none."""
    pairs = _pairs(side, fields, lines)
    if not pairs:
        return float("inf")
    return max(float(np.hypot(p[0] - mm(x), p[1] - mm(y))) for p, (x, y) in pairs)


def refined_corners(
    side: str, fields: CardFields, lines: list[TextLine], photo_to_card: np.ndarray
) -> np.ndarray | None:
    """Better photo corners for the card, or None when the current ones are good."""
    pairs = _pairs(side, fields, lines)
    if len(pairs) < 2:
        return None
    src = np.array([p for p, _ in pairs], dtype=np.float32)
    dst = np.array([[mm(x), mm(y)] for _, (x, y) in pairs], dtype=np.float32)
    if np.abs(src - dst).max() < mm(GOOD_ENOUGH_MM):
        return None
    # With four or more landmarks a full affine map also takes out shear left by a
    # perspective the locator missed; with three, rotation, scale and shift only.
    if len(pairs) >= 4:
        a, _ = cv2.estimateAffine2D(src, dst, method=cv2.LMEDS)
    else:
        a, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if a is None:
        return None
    scale = float(np.hypot(a[0, 0], a[1, 0]))
    if not 0.6 < scale < 1.6:
        return None
    correction = np.vstack([a, [0, 0, 1]])
    # Card corners in the current card frame, then in the photo.
    inv = np.linalg.inv(correction)
    corners_now = cv2.perspectiveTransform(CANONICAL.reshape(-1, 1, 2), inv).reshape(-1, 2)
    return to_photo(corners_now, photo_to_card)
