"""The recognition engine: image bytes and request options in, the vendor's response out.

No database, no network. Work is done only when the request asks for it: the card is
located and read once, and every optional output (verification, locations, images)
is derived from that one reading.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from dataclasses import dataclass, field

import cv2
import numpy as np

from idcard.errors import ErrorCode, ServiceError
from idcard.options import RecognitionOptions
from worker.recognition import alerts, idnumber, imageio, verification
from worker.recognition.fields import (
    BACK_FIELDS,
    FRONT_FIELDS,
    CardFields,
    parse_back,
    parse_front,
    strip_label,
)
from worker.recognition.imageio import stretch_contrast
from worker.recognition.layout import (
    ASPECT,
    BACK_EMBLEM_MM,
    BACK_TITLE_CENTRES_MM,
    CARD_H_MM,
    CARD_H_PX,
    CARD_W_MM,
    CARD_W_PX,
    FIELD_MAX_HEIGHT_MM,
    FRONT_PORTRAIT_MM,
    TITLE_MAX_HEIGHT_MM,
    is_back_title,
    mm,
)
from worker.recognition.locate import locate_cards, order_corners
from worker.recognition.ocr import OcrEngine, TextLine, crop_line, get_ocr
from worker.recognition.reader import CardRead, binarise, normalise, read_card, side_evidence
from worker.recognition.rectify import rectify_card, rotate_180, to_photo
from worker.recognition.register import landmark_error, refined_corners

log = logging.getLogger(__name__)

# Candidates tried before giving up with AIS.0104. Each costs one detector pass.
MAX_CANDIDATES = 4
# Horizontal scales at which a doubtful ID number line is read again, in order.
NUMBER_SQUEEZES = (1.0, 0.6, 1.6)
# Re-reads of one candidate at the outline its landmarks give.
MAX_REGISTRATIONS = 2
# A read whose landmarks are further than this from the layout is worth a second outline.
POOR_REGISTRATION_MM = 4.0
# An unreadable card is answered (fields "", with its alerts) only when the locator's
# best outline scores at least this (a clear card-shaped outline; locate.py's score:
# edge support, aspect, fill, size) ...
UNREADABLE_MIN_OUTLINE = 0.8
# ... and one of these requested alerts is raised on it: the reason it cannot be read.
UNREADABLE_REASONS = ("blur", "reproduce", "border_integrity", "glare")
# A card cut off by the frame has no card-shaped outline: for the border integrity
# reason alone, the card's own print stands in for a clear outline: at least this much
# side evidence (reader.side_evidence: two of its captions or titles) read on it. Glare
# needs that evidence as well as the outline: a reflection washes out any white card
# (a bank card, a badge), and only the card's own print says it is an ID card.
UNREADABLE_CUT_EVIDENCE = 2.0
UNREADABLE_NEED_EVIDENCE = ("glare",)
# The back's emblem is red: its box is this much redder (Lab a*, 8-bit units) than the
# card's median when the unreadable card shows its back.
EMBLEM_REDNESS = 8.0


@dataclass
class ReadSide:
    read: CardRead
    fields: CardFields


@dataclass
class Recognition:
    """Everything learned from one photo; the response is built from this."""

    image: imageio.LoadedImage
    front: ReadSide | None = None
    back: ReadSide | None = None
    timings: dict[str, float] = field(default_factory=dict)


# Address characters are set in cells about this wide (mm).
ADDRESS_CELL_MM = 3.2


def _whole_image_corners(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    pts = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    return pts if w >= h else np.roll(pts, -1, axis=0)


def _parse(r: CardRead, bgr: np.ndarray, ocr: OcrEngine) -> CardFields:
    def crop(line: TextLine) -> np.ndarray:
        quad = to_photo(line.quad, r.photo_to_card)
        return stretch_contrast(crop_line(bgr, quad, pad=0.08, hpad=0.3))

    def choose(line: TextLine, options: list[str], priors: list[float] | None = None) -> str:
        if not line.label_merged:
            return ocr.best_of(crop(line), options, priors=priors)[0]
        # The box was cut to the value, the text still starts with the label: the
        # image can only be asked about the value part.
        values = [strip_label(o) for o in options]
        best = ocr.best_of(crop(line), values, priors=priors)[0]
        return options[values.index(best)] if best in values else options[0]

    def read_number(line: TextLine) -> str | None:
        # The number's wide letter spacing makes the recogniser merge a repeated digit
        # ('44' as '4'); at other widths the spacing looks ordinary to it.
        image = crop(line)
        for squeeze in NUMBER_SQUEEZES:
            resized = image if squeeze == 1.0 else cv2.resize(
                image, None, fx=squeeze, fy=1.0, interpolation=cv2.INTER_AREA
                if squeeze < 1 else cv2.INTER_CUBIC)
            number = ocr.read_constrained(resized, "0123456789X", 18, idnumber.valid_number)
            if number is not None:
                return number
        return None

    def read_on(line: TextLine) -> list[str]:
        # One address character (3.2 mm cells) more room on the right; the line as it
        # is and binarised (a faint character under glare comes out dark), both models.
        quad = line.quad.copy()
        quad[[1, 2], 0] += mm(ADDRESS_CELL_MM)
        image = crop(TextLine(quad))
        return [normalise(ocr.read_single(im, second=second)[0])
                for im in (image, binarise(image)) for second in (False, True)]

    if r.side == "front":
        return parse_front(r.lines, choose, read_number, read_on)
    return parse_back(r.lines, choose)


def read_registered(ocr: OcrEngine, bgr: np.ndarray, corners: np.ndarray) -> ReadSide | None:
    """Read the card at ``corners``; read again while its text says the outline is off
    (a second pass when a rough outline, a portrait taken for the card say, moved far)."""
    r = read_card(ocr, bgr, corners)
    if r.side is None:
        return None
    best = ReadSide(r, _parse(r, bgr, ocr))
    error = landmark_error(r.side, best.fields, r.lines)
    for _ in range(MAX_REGISTRATIONS):
        better = refined_corners(r.side, best.fields, best.read.lines, best.read.photo_to_card)
        if better is None:
            break
        r2 = read_card(ocr, bgr, better)
        if r2.side != r.side:
            break
        fields2 = _parse(r2, bgr, ocr)
        error2 = landmark_error(r2.side, fields2, r2.lines)
        if _completeness(fields2) < _completeness(best.fields) or error2 > error:
            break
        best, error = ReadSide(r2, fields2), error2
    return best


def _completeness(fields: CardFields) -> int:
    return sum(1 for v in fields.values.values() if v)


# Text lines whose boxes lie within this many median line heights of each other are
# one block of print. A card's widest gap, a one-line address above the number row, is
# about 2 line boxes; text on other things in the photo (a badge, a bank card) lies
# further off.
_TEXT_BLOCK_LINK = 3.0


def _text_blocks(lines: list[TextLine]) -> list[list[TextLine]]:
    """The lines grouped into blocks of print (single linkage on the gap between boxes),
    the block with the most lines first."""
    h = float(np.median([ln.height for ln in lines]))
    reach = _TEXT_BLOCK_LINK * h
    parent = list(range(len(lines)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(lines):
        for j in range(i + 1, len(lines)):
            b = lines[j]
            gap_x = max(0.0, max(a.x0, b.x0) - min(a.x1, b.x1))
            gap_y = max(0.0, max(a.y0, b.y0) - min(a.y1, b.y1))
            if max(gap_x, gap_y) <= reach:
                parent[root(i)] = root(j)
    groups: dict[int, list[TextLine]] = {}
    for i, ln in enumerate(lines):
        groups.setdefault(root(i), []).append(ln)
    return sorted(groups.values(),
                  key=lambda g: (-len(g), -sum((ln.x1 - ln.x0) * ln.height for ln in g)))


def _block_outline(lines: list[TextLine]) -> np.ndarray:
    pts = np.concatenate([ln.quad for ln in lines]).astype(np.float32)
    (cx, cy), (w, h), angle = cv2.minAreaRect(pts)
    if w < h:
        w, h, angle = h, w, angle + 90
    w, h = w / 0.8, h / 0.75
    corners = cv2.boxPoints(((cx, cy), (w, h), angle))
    return order_corners(corners)


def _detected_lines(bgr: np.ndarray, ocr: OcrEngine) -> list[TextLine]:
    """Where the photo's text is (detection only, at most 960 px a side)."""
    return [ln for ln in ocr.detect(bgr, max_side=960) if ln.height > 4]


def _text_outlines(bgr: np.ndarray, ocr: OcrEngine,
                   lines: list[TextLine] | None = None) -> list[np.ndarray]:
    """Rough card outlines from where text is, for photos whose card edge is not found.

    The card's text block covers about 80 % of its width and 75 % of its height; an
    outline is that block grown accordingly, and re-registration then refines it. Two
    are given: the largest block of print (text on other things in a cluttered photo
    stretches an outline around all of it) and all the text together (a card whose rows
    a wide gap splits into blocks); the caller keeps the read with more fields.
    ``lines``: the photo's :func:`_detected_lines`, when the caller has them already.
    """
    if lines is None:
        lines = _detected_lines(bgr, ocr)
    if len(lines) < 3:
        return []
    blocks = _text_blocks(lines)
    outlines = []
    if len(blocks) > 1 and len(blocks[0]) >= 3:
        outlines.append(_block_outline(blocks[0]))
    outlines.append(_block_outline(lines))
    return outlines


def _title_outline(bgr: np.ndarray, ocr: OcrEngine, lines: list[TextLine]) -> np.ndarray | None:
    """The card's outline placed by the back's two titles alone, for a back whose fields
    the frame cuts off (a cut of 14-20 mm at the bottom leaves only the titles and the
    emblem): their baselines give the card's turn, their centres (10 mm apart, one
    above the other) its scale and place. None unless both titles are read. ``lines``:
    the photo's :func:`_detected_lines`."""
    if len(lines) < 2:
        return None
    r = read_card(ocr, bgr, _block_outline(lines))
    found = {ln.text: ln for ln in r.lines if ln.text in BACK_TITLE_CENTRES_MM}
    if len(found) < len(BACK_TITLE_CENTRES_MM):
        return None
    (t1, (x1, y1)), (t2, (x2, y2)) = BACK_TITLE_CENTRES_MM.items()
    ends = np.array([[ln.x0, ln.cy, ln.cx, ln.cy, ln.x1, ln.cy] for ln in (found[t1], found[t2])],
                    np.float32)
    (l1, c1, r1), (l2, c2, r2) = to_photo(ends, r.photo_to_card).reshape(2, 3, 2).astype(np.float64)
    # The card's +x: along both titles' baselines (longer, so better than the centres'
    # offset); its +y at right angles to it.
    along = (r1 - l1) + (r2 - l2)
    right = along / max(float(np.linalg.norm(along)), 1e-6)
    down = np.array([-right[1], right[0]])
    scale = float(np.dot(c2 - c1, down)) / (y2 - y1)  # photo px per mm
    if scale <= 0:
        return None
    centre_mm = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    centre = (c1 + c2) / 2
    corners = [(0.0, 0.0), (CARD_W_MM, 0.0), (CARD_W_MM, CARD_H_MM), (0.0, CARD_H_MM)]
    quad = [centre + scale * ((x - centre_mm[0]) * right + (y - centre_mm[1]) * down)
            for x, y in corners]
    return np.array(quad, np.float32)


def find_and_read(bgr: np.ndarray, want_two: bool, ocr: OcrEngine) -> list[ReadSide]:
    """Read the card(s) in the photo; two different sides when ``want_two``."""
    candidates = [c.corners for c in locate_cards(bgr, max_cards=2 if want_two else 1)]
    h, w = bgr.shape[:2]
    # A photo cropped to the card has no background to find an edge against.
    if abs(max(w, h) / min(w, h) - ASPECT) / ASPECT < 0.15:
        candidates.append(_whole_image_corners(bgr))
    wanted = 2 if want_two else 1
    reads: list[ReadSide] = []
    # Reads whose text runs across the card frame: the outline was wrong. Kept only as
    # a last resort, after the other candidates and the text-based outline.
    doubtful: list[ReadSide] = []
    tried = 0
    for corners in candidates:
        if tried >= MAX_CANDIDATES + (2 if want_two else 0):
            break
        if any(_overlaps(corners, r.read.corners) for r in reads):
            continue
        tried += 1
        r = read_registered(ocr, bgr, corners)
        # Side words alone (a bank card saying 居民身份证, say) with no field read is
        # no ID card: answer AIS.0104 rather than an empty result.
        if r is None or _completeness(r.fields) == 0:
            continue
        if want_two and any(x.read.side == r.read.side for x in reads):
            continue
        if not _aligned(r) or _spans_two_sides(r):
            doubtful.append(r)
            continue
        reads.append(r)
        if len(reads) == wanted:
            break
    if len(reads) < wanted:
        # No candidate outline held (the second) card: outline it by where its text
        # is, with the card(s) already read masked out.
        masked = _mask_cards(bgr, [r.read.corners for r in reads])
        found = []
        for outline in _text_outlines(masked, ocr):
            r = read_registered(ocr, bgr, outline)
            if (r is not None and _completeness(r.fields) > 0
                    and not any(x.read.side == r.read.side for x in reads)):
                (found if _aligned(r) else doubtful).append(r)
        if found:
            reads.append(max(found, key=lambda r: (_completeness(r.fields),
                                                   -_registration_error(r))))
    elif not want_two and _registration_error(reads[0]) > mm(POOR_REGISTRATION_MM):
        # Read, but its landmarks are far from where the layout puts them (an outline
        # around more than the card, with too few landmarks to correct it): the text
        # itself may give a better outline.
        for outline in _text_outlines(bgr, ocr)[-1:]:
            r = read_registered(ocr, bgr, outline)
            if (r is not None and r.read.side == reads[0].read.side and _aligned(r)
                    and _completeness(r.fields) >= _completeness(reads[0].fields)
                    and _registration_error(r) < _registration_error(reads[0])):
                reads[0] = r
    for r in sorted(doubtful, key=lambda r: -_completeness(r.fields)):
        if len(reads) >= wanted:
            break
        if not any(x.read.side == r.read.side or _overlaps(x.read.corners, r.read.corners)
                   for x in reads):
            reads.append(r)
    return reads


def _spans_two_sides(r: ReadSide) -> bool:
    """An outline around two cards (both sides laid side by side): its text has the
    front's labels and the back's titles."""
    front, back = side_evidence(r.read.lines)
    return front >= 1 and back >= 1


def _registration_error(r: ReadSide) -> float:
    return landmark_error(r.read.side or "", r.fields, r.read.lines)


def _mask_cards(bgr: np.ndarray, outlines: list[np.ndarray]) -> np.ndarray:
    """The photo with each outline (grown by 5 %) painted over in its median colour."""
    if not outlines:
        return bgr
    out = bgr.copy()
    fill = tuple(int(v) for v in np.median(bgr.reshape(-1, 3), axis=0))
    for quad in outlines:
        centre = quad.mean(axis=0)
        grown = (quad - centre) * 1.05 + centre
        cv2.fillConvexPoly(out, grown.astype(np.int32), fill)
    return out


def _aligned(r: ReadSide) -> bool:
    """Whether the card's lines lie along the card frame (printed text is at most
    about 5 mm tall, the back's titles 9 mm; a line seen at an angle to the frame, or
    a frame around part of the card, gives much taller boxes)."""
    titles = [ln.height for ln in r.read.lines if is_back_title(ln.text)]
    if any(h > mm(TITLE_MAX_HEIGHT_MM) for h in titles):
        return False
    heights = sorted(ln.height for ln in r.read.lines
                     if len(ln.text) >= 4 and not is_back_title(ln.text))
    return not heights or heights[len(heights) // 2] < mm(FIELD_MAX_HEIGHT_MM)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    inter, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    small = min(cv2.contourArea(a.astype(np.float32)), cv2.contourArea(b.astype(np.float32)))
    return small > 0 and inter / small > 0.3


def analyse(image: imageio.LoadedImage, options: RecognitionOptions) -> Recognition:
    ocr = get_ocr()
    rec = Recognition(image=image)
    t0 = time.perf_counter()
    reads = find_and_read(image.bgr, options.side == "double_side", ocr)
    rec.timings["read"] = time.perf_counter() - t0
    for r in reads:
        if r.read.side == "front" and rec.front is None:
            rec.front = r
        elif r.read.side == "back" and rec.back is None:
            rec.back = r
    if rec.front is None and rec.back is None and options.alerts:
        t0 = time.perf_counter()
        unread = unreadable_card(image, options, ocr)
        rec.timings["unreadable"] = time.perf_counter() - t0
        if unread is not None:
            setattr(rec, unread.read.side or "front", unread)
    if rec.front is None and rec.back is None:
        raise ServiceError(ErrorCode.NO_CARD, "no ID card found in the image, or too poor to read")
    return rec


def _guess_side(bgr: np.ndarray, corners: np.ndarray) -> tuple[str, np.ndarray]:
    """Which side an unreadable card shows, and its corners upright, from its look: the
    back's emblem is a red disc in the top-left corner, the front's portrait (hair,
    clothes) a dark box on the right. Blur leaves both visible."""
    best: tuple[float, str, np.ndarray] | None = None
    for quad in (corners, rotate_180(corners)):
        card, _ = rectify_card(bgr, quad)
        lab = cv2.cvtColor(card, cv2.COLOR_BGR2Lab)
        x0, y0, x1, y1 = (int(round(mm(v))) for v in BACK_EMBLEM_MM)
        redness = float(np.median(lab[y0:y1, x0:x1, 1])) - float(np.median(lab[..., 1]))
        if best is None or redness > best[0]:
            best = (redness, "back", quad)
    assert best is not None
    if best[0] >= EMBLEM_REDNESS:
        return best[1], best[2]
    card, _ = rectify_card(bgr, corners)
    grey = cv2.cvtColor(card, cv2.COLOR_BGR2GRAY)
    x0, y0, x1, y1 = FRONT_PORTRAIT_MM
    box = grey[int(mm(y0)):int(mm(y1)), int(mm(x0)):int(mm(x1))]
    flipped = grey[int(mm(CARD_H_MM - y1)):int(mm(CARD_H_MM - y0)),
                   int(mm(CARD_W_MM - x1)):int(mm(CARD_W_MM - x0))]
    upright = float(box.mean()) <= float(flipped.mean())
    return "front", corners if upright else rotate_180(corners)


def _turned(ln: TextLine) -> TextLine:
    """A line of the card image turned by 180 degrees."""
    q = np.stack([CARD_W_PX - ln.quad[:, 0], CARD_H_PX - ln.quad[:, 1]], axis=1)
    return TextLine(np.roll(q, 2, axis=0).astype(np.float32), ln.text, ln.score)


def unreadable_card(image: imageio.LoadedImage, options: RecognitionOptions,
                    ocr: OcrEngine) -> ReadSide | None:
    """A card that is clearly in the photo but cannot be read, as a side with no field
    read, when the request asks for an alert that says why (blur, reproduce, border
    integrity, glare): the caller learns the card is there and blurred (or recaptured,
    cut off, washed out by a reflection) instead of a bare AIS.0104. None when there is
    no clear outline (for a cut-off card: no two of the card's captions or titles read
    either), or no requested reason is raised (a photo without an ID card, say, stays
    AIS.0104)."""
    wanted = [a for a in options.alerts if a in UNREADABLE_REASONS]
    if not wanted:
        return None
    bgr = image.bgr
    cands = locate_cards(bgr, max_cards=1)
    outlines = [(c.corners, c.score) for c in cands]
    if "border_integrity" in wanted and (not cands or cands[0].score < UNREADABLE_MIN_OUTLINE):
        # A card cut off by the frame has no card-shaped edge to find; where its print
        # is outlines it (find_and_read tried these too, but read no field on them).
        lines = _detected_lines(bgr, ocr)  # once, for both
        outlines += [(quad, 0.0) for quad in _text_outlines(bgr, ocr, lines)]
        titles = _title_outline(bgr, ocr, lines)
        if titles is not None:
            outlines.append((titles, 0.0))
    for corners, outline_score in outlines:
        side = _unreadable_side(image, options, ocr, wanted, corners, outline_score)
        if side is not None:
            return side
    return None


def _unreadable_side(image: imageio.LoadedImage, options: RecognitionOptions,
                     ocr: OcrEngine, wanted: list[str], corners: np.ndarray,
                     outline_score: float) -> ReadSide | None:
    """:func:`unreadable_card` on one outline."""
    bgr = image.bgr
    if outline_score < UNREADABLE_MIN_OUTLINE:
        # No clear outline: only a card cut off by the frame (whose outline cannot be
        # card-shaped) may still be answered, if its own print says it is an ID card.
        wanted = [a for a in wanted if a == "border_integrity"]
        if not wanted:
            return None
    r = read_card(ocr, bgr, corners)
    if max(side_evidence(r.lines)) < UNREADABLE_CUT_EVIDENCE:
        if outline_score < UNREADABLE_MIN_OUTLINE:
            return None
        wanted = [a for a in wanted if a not in UNREADABLE_NEED_EVIDENCE]
        if not wanted:
            return None
    side = r.side
    corners = np.asarray(r.corners, np.float32)
    if side is None:
        side = options.side if options.side in ("front", "back") else None
        guessed, upright = _guess_side(bgr, corners)
        if side is None or side == guessed:
            side, corners = guessed, upright
        if not np.allclose(corners, r.corners):  # turned over: the same boxes, turned
            card, m = rectify_card(bgr, corners)
            r = CardRead(corners=corners, photo_to_card=m, card=card,
                         lines=[_turned(ln) for ln in r.lines])
        r.side = side
    limits = alerts.thresholds()
    ctx = alerts.AlertContext(image, r, readable=False)
    scores = alerts.evaluate(ctx, wanted)
    if not any(scores[a] >= limits[a] for a in wanted):
        return None
    return ReadSide(r, CardFields())


def recognize(
    image_bytes: bytes,
    options: RecognitionOptions | None = None,
    today: dt.date | None = None,
) -> dict:
    """The vendor response body ``{"result": {...}}`` for one image.

    Raises :class:`ServiceError` with an ``AIS.*`` code for every failure.
    """
    options = options or RecognitionOptions()
    today = today or verification.china_today()
    image = imageio.load_image(image_bytes)
    try:
        rec = analyse(image, options)
        return {"result": build_result(rec, options, today)}
    except ServiceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any engine bug must surface as AIS.0105
        # The frames, not the message: an exception's text may quote what was read.
        log.error("recognition failed: %s\n%s", type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)))
        raise ServiceError(
            ErrorCode.RECOGNITION_FAILED, "recognition failed inside the service"
        ) from None


# --- building the response -------------------------------------------------------------

def _text_location(side: ReadSide, names: tuple[str, ...]) -> dict[str, list[list[int]]]:
    out = {}
    for name in names:
        quad = side.fields.quads.get(name)
        if quad is not None:
            pts = to_photo(quad, side.read.photo_to_card)
            out[name] = [[int(round(x)), int(round(y))] for x, y in pts]
    return out


def _portrait_quad(side: ReadSide) -> np.ndarray:
    x0, y0, x1, y1 = (mm(v) for v in FRONT_PORTRAIT_MM)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _side_result(rec: Recognition, side_name: str, options: RecognitionOptions,
                 today: dt.date, double: bool) -> dict:
    side = rec.front if side_name == "front" else rec.back
    if side is None:
        return {}
    names = FRONT_FIELDS if side_name == "front" else BACK_FIELDS
    res: dict = {name: side.fields.values.get(name, "") for name in names}
    if options.wants("return_verification"):
        front_fields = None
        if double and side_name == "back" and rec.front is not None:
            front_fields = rec.front.fields.values
        res["verification_result"] = verification.side_verification(
            side_name, res, today, double_side=double, front_fields=front_fields,
        )
    if options.wants("return_text_location"):
        res["text_location"] = _text_location(side, names)
    if options.wants("return_portrait_image"):
        if side_name == "front":
            x0, y0, x1, y1 = (int(round(mm(v))) for v in FRONT_PORTRAIT_MM)
            res["portrait_image"] = imageio.encode_jpeg_base64(side.read.card[y0:y1, x0:x1])
        else:
            res["portrait_image"] = ""
    if options.wants("return_portrait_location"):
        if side_name == "front":
            pts = to_photo(_portrait_quad(side), side.read.photo_to_card)
            res["portrait_location"] = [[int(round(x)), int(round(y))] for x, y in pts]
        else:
            res["portrait_location"] = []
    if options.wants("return_adjusted_image"):
        res["adjusted_image"] = imageio.encode_jpeg_base64(side.read.card)
    if options.alerts:
        ctx = alerts.AlertContext(rec.image, side.read, readable=_completeness(side.fields) > 0)
        res.update(alerts.response_fields(ctx, options))
    return res


def build_result(rec: Recognition, options: RecognitionOptions, today: dt.date) -> dict:
    if options.side == "double_side":
        return {
            "front": _side_result(rec, "front", options, today, double=True),
            "back": _side_result(rec, "back", options, today, double=True),
        }
    side_name = "front" if rec.front is not None else "back"
    if options.side in ("front", "back") and getattr(rec, options.side) is not None:
        side_name = options.side
    res = _side_result(rec, side_name, options, today, double=False)
    if options.side in ("front", "back") and side_name != options.side:
        # Read anyway (a caller who swapped the two uploads still gets the fields), and
        # said, so the caller can tell the customer to send the other side.
        res["side_mismatch"] = {"requested": options.side, "found": side_name}
    return res
