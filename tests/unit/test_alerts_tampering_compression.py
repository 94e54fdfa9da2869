"""Tampering's compression evidence: a field compressed once on a card compressed twice.

Contexts are built from generated photos and their known geometry (no OCR), as in
``test_alerts.py``.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from synthcard.alerts import make_alert_photo
from worker.recognition import imageio
from worker.recognition.alerts import DEFAULT_THRESHOLDS, REGISTRY, AlertContext
from worker.recognition.alerts.tampering import compressed_once
from worker.recognition.ocr import TextLine
from worker.recognition.reader import CardRead
from worker.recognition.rectify import rectify_card


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _context(case, data: bytes) -> AlertContext:
    """The case's truth (corners, field boxes) over the photo ``data``."""
    image = imageio.load_image(data)
    corners = np.asarray(case.quads[0], np.float32)
    card, m = rectify_card(image.bgr, corners)
    lines = []
    for name, quad in case.text_locations.items():
        if name in ("address", "valid_to"):
            continue
        pts = cv2.perspectiveTransform(np.asarray(quad, np.float32).reshape(-1, 1, 2), m)
        pts = pts.reshape(4, 2)
        centre = pts.mean(axis=0)
        pts = np.stack([pts[:, 0], centre[1] + (pts[:, 1] - centre[1]) * 1.3], axis=1)
        lines.append(TextLine(pts.astype(np.float32), case.expected.get(name, "") or name, 0.99))
    read = CardRead(corners=corners, photo_to_card=m, card=card, lines=lines, side=case.side)
    return AlertContext(image, read)


def _raised(score: int) -> bool:
    return score >= DEFAULT_THRESHOLDS["tampering"]


def test_a_field_compressed_once_on_a_card_compressed_twice_raises():
    """The camera saved the photo at quality 70; an editor pasted the birth date from
    another copy of the photo (the same print and paper: no texture or typesetting to
    see) and saved the whole at 90. Every block was compressed twice, on the same grid,
    except the pasted field's."""
    case = make_alert_photo(3, "clean", side="front")
    original = _decode(case.image_bytes)
    camera = _decode(_jpeg(original, 70))
    x0, y0 = np.min(case.text_locations["birth"], axis=0).astype(int) - 12
    x1, y1 = np.max(case.text_locations["birth"], axis=0).astype(int) + 12
    edited = camera.copy()
    edited[y0:y1, x0:x1] = original[y0:y1, x0:x1]
    ctx = _context(case, _jpeg(edited, 90))
    assert ctx.image.jpeg_quant is not None
    assert compressed_once(ctx) > 0.8
    assert _raised(REGISTRY["tampering"].score(ctx))

    # The same photo saved again whole: compressed twice everywhere, nothing stands out.
    resaved = _context(case, _jpeg(camera, 90))
    assert compressed_once(resaved) < 0.2
    assert not _raised(REGISTRY["tampering"].score(resaved))
    # As the camera saved it: compressed once everywhere.
    single = _context(case, case.image_bytes)
    assert compressed_once(single) == 0.0
    assert not _raised(REGISTRY["tampering"].score(single))


def test_compression_is_not_judged_off_the_files_grid():
    """A PNG has no quantization table; a JPEG turned by its orientation tag has its
    blocks elsewhere than the pixels as shown: neither is judged."""
    case = make_alert_photo(3, "clean", side="front")
    ok, png = cv2.imencode(".png", _decode(case.image_bytes))
    ctx = _context(case, png.tobytes())
    assert ctx.image.jpeg_quant is None
    assert compressed_once(ctx) == 0.0
    turned = _context(case, case.image_bytes)
    turned.image = dataclasses.replace(turned.image, exif_transposed=True)
    assert compressed_once(turned) == 0.0


def test_a_quantization_table_of_zeros_is_not_judged():
    """The standard forbids a step of 0, but a decoder reads such a file: it is loaded,
    its table is not kept (nothing to divide by), and the alert is scored without it."""
    case = make_alert_photo(3, "clean", side="front")
    data = bytearray(case.image_bytes)
    dqt = data.find(b"\xff\xdb")
    data[dqt + 5:dqt + 5 + 64] = bytes(64)  # the first table's 64 steps
    ctx = _context(case, bytes(data))
    assert ctx.image.jpeg_quant is None
    assert compressed_once(ctx) == 0.0
    assert not _raised(REGISTRY["tampering"].score(ctx))
