"""Glare's specular spot: a reflection beside the always-printed cells, and a card so
washed out that none of its fields can be read.

The first tests paint on a generated card's rectified image with its known geometry (no
OCR); the last ones run the engine on generated photos (tuning seeds, not report seeds). A
back washed out past reading: test_alerts.py, with the other unreadable cards.
"""

from __future__ import annotations

import cv2
import numpy as np

from synthcard.alerts import make_alert_photo
from worker.recognition import imageio
from worker.recognition.alerts import DEFAULT_THRESHOLDS, REGISTRY, AlertContext
from worker.recognition.alerts.glare import spot_cells
from worker.recognition.layout import PX_PER_MM
from worker.recognition.reader import CardRead
from worker.recognition.rectify import rectify_card

GLARE = DEFAULT_THRESHOLDS["glare"]


def _card(seed: int = 5, condition: str = "clean", side: str = "front"):
    case = make_alert_photo(seed, condition, 0.0, side)
    image = imageio.load_image(case.image_bytes)
    corners = np.asarray(case.quads[0], np.float32)
    card, m = rectify_card(image.bgr, corners)
    return image, corners, card, m


def _context(image, corners, m, card, readable: bool = True) -> AlertContext:
    # No lines: the layout is the published one (the identity), and no cell is judged
    # against a reading, so what is measured is the spot alone.
    read = CardRead(corners=corners, photo_to_card=m, card=card, lines=[], side="front")
    return AlertContext(image, read, readable=readable)


def _spot(card: np.ndarray, centre_mm: tuple[float, float], radius_mm: float,
          gain: float = 1.6) -> np.ndarray:
    """Light added as a reflection adds it: a smooth bump, clipped white in its core."""
    h, w = card.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = ((xx - centre_mm[0] * PX_PER_MM) ** 2 + (yy - centre_mm[1] * PX_PER_MM) ** 2)
    bump = np.exp(-d2 / (2 * (radius_mm * PX_PER_MM) ** 2)) * 255 * gain
    return cv2.convertScaleAbs(card.astype(np.float32) + bump[..., None])


def test_a_reflection_between_the_rows_is_a_spot():
    """A reflection over the pattern between the address and the number (no caption or
    title under it) washes out no always-printed cell, but clips a disc of the card
    white, print and pattern gone, while the paper elsewhere keeps its level."""
    image, corners, card, m = _card()
    assert spot_cells(_context(image, corners, m, card)) == 0.0
    lit = _spot(card, (38.0, 40.0), 9.0)
    ctx = _context(image, corners, m, lit)
    assert spot_cells(ctx) > 0.5
    assert REGISTRY["glare"].score(ctx) >= GLARE
    # A smaller one (a few mm across) is below the decision point.
    small = _context(image, corners, m, _spot(card, (38.0, 40.0), 3.0))
    assert REGISTRY["glare"].score(small) < GLARE


def test_an_over_exposed_card_is_no_spot():
    """Over-exposure clips the card's paper everywhere: the security print's lines still
    break it up, and the paper far from any clipped region is as light: no spot."""
    image, corners, card, m = _card()
    bright = cv2.convertScaleAbs(card, alpha=1.35, beta=10)
    ctx = _context(image, corners, m, bright)
    assert spot_cells(ctx) < 0.3
    assert REGISTRY["glare"].score(ctx) < GLARE


def test_the_portraits_plain_background_clipped_is_no_spot():
    """The portrait's background has no security print: on a bright photo it clips flat
    white whole, which is not light added over the card."""
    image, corners, card, m = _card()
    white = card.copy()
    white[int(7 * PX_PER_MM):int(37 * PX_PER_MM), int(56 * PX_PER_MM):int(80 * PX_PER_MM)] = 255
    assert spot_cells(_context(image, corners, m, white)) == 0.0


def test_the_spot_is_judged_on_a_card_nothing_was_read_from():
    image, corners, card, m = _card()
    lit = _spot(card, (38.0, 40.0), 9.0)
    ctx = _context(image, corners, m, lit, readable=False)
    assert REGISTRY["glare"].score(ctx) >= GLARE


def test_a_reflection_beside_a_short_name_raises_glare(run_engine):
    """Tuning photo: a reflection over the paper right of a short name, clear of every
    always-printed cell (the cell count alone scored 2)."""
    case = make_alert_photo(9100017, "glare", 1 / 3, "front")
    res = run_engine(case.image_bytes, flags={"detect_glare"})["result"]
    assert res["detect_glare_result"] is True
    assert res["name"] == case.expected["name"]


def test_an_over_exposed_legitimate_front_does_not_raise_glare(run_engine):
    """Tuning photo: a legitimate, over-exposed front whose portrait background and
    much of the paper are clipped white."""
    case = make_alert_photo(9200203, "phone_exif", 1.0, "front")
    res = run_engine(case.image_bytes, flags={"detect_glare"})["result"]
    assert res["detect_glare_result"] is False


def test_a_bright_stretch_of_plain_paper_with_no_falloff_is_no_spot(run_engine):
    """Tuning photo: a legitimate back lit brighter on its upper left, where the card
    has no print between the emblem and the titles. That plain paper clips white in one
    large piece, but the light does not fall off around it: the paper just outside it
    is no brighter than the paper 8-16 mm away (a reflection's light does fall off). It
    scored 99 on the spot's area alone."""
    case = make_alert_photo(9130367, "texture", 1.0, "back")
    res = run_engine(case.image_bytes, flags={"detect_glare"})["result"]
    assert res["detect_glare_result"] is False
    assert res["score_info"]["glare_score"] < GLARE
