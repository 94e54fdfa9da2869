"""Read one located card: rectify, turn upright, find and recognise its text lines."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import cv2
import numpy as np

from worker.recognition import idnumber
from worker.recognition.ethnicity import ETHNIC_GROUPS, ETHNIC_LOOKALIKES
from worker.recognition.imageio import stretch_contrast
from worker.recognition.layout import (
    BACK_LABELS,
    BACK_TITLES,
    CARD_H_PX,
    CARD_W_PX,
    FRONT_LABELS,
    FRONT_NAME_ROW_Y_MM,
    FRONT_TEXT_MAX_X_MM,
    FRONT_VALUE_X_MM,
    is_back_title,
    mm,
)
from worker.recognition.ocr import OcrEngine, TextLine, crop_line
from worker.recognition.rectify import rectify_card, rotate_180, to_photo

# Lines smaller than this on the canonical card are guilloche or dust, not print.
MIN_LINE_HEIGHT_PX = 12
MIN_LINE_WIDTH_PX = 10
# The detector runs on a smaller copy of the card: its text is 2.6 mm and more, which
# stays over 15 px at this size, and detection time grows with the pixels.
DET_MAX_SIDE = 736
# How many of the widest lines vote on whether the card is upside down.
ORIENTATION_VOTERS = 6


@dataclass
class CardRead:
    corners: np.ndarray  # tl, tr, br, bl of the upright card, photo pixels
    photo_to_card: np.ndarray  # 3×3 homography
    card: np.ndarray  # the canonical upright card image (BGR)
    lines: list[TextLine] = field(default_factory=list)  # card coordinates, with text
    side: str | None = None  # 'front', 'back', or None when neither was recognised
    side_score: float = 0.0


def _upside_down(ocr: OcrEngine, card: np.ndarray, lines: list[TextLine]) -> bool:
    voters = sorted(lines, key=lambda ln: ln.x1 - ln.x0, reverse=True)[:ORIENTATION_VOTERS]
    if not voters:
        return False
    crops = [crop_line(card, ln.quad) for ln in voters]
    votes = ocr.classify_180(crops)
    weight = 0.0
    for (flipped, conf), ln in zip(votes, voters, strict=True):
        w = (ln.x1 - ln.x0) * conf
        weight += w if flipped else -w
    return weight > 0


def _flip_line(ln: TextLine) -> TextLine:
    q = np.stack([CARD_W_PX - ln.quad[:, 0], CARD_H_PX - ln.quad[:, 1]], axis=1)
    return TextLine(np.roll(q, 2, axis=0).astype(np.float32), ln.text, ln.score)


def side_evidence(lines: list[TextLine]) -> tuple[float, float]:
    """How strongly the text says front and back."""
    text = "".join(ln.text for ln in lines)
    front = sum(1.0 for lab in FRONT_LABELS if lab in text)
    back = sum(1.0 for lab in BACK_LABELS + BACK_TITLES if lab in text)
    if any(_looks_like_id_number(ln.text) for ln in lines):
        front += 2.0
    if "长期" in text or text.count(".") >= 4:
        back += 1.0
    return front, back


# Where the label column ends and the values begin (mm). A detected line that spans
# both is cut there when its text did not come out with a clean label.
_FRONT_VALUE_CUT_MM = 15.0
_LABEL_COLUMN_END_MM = 15.2
_NUMBER_VALUE_CUT_MM = 27.2
_BACK_VALUE_CUT_MM = 30.0
_LABEL_PREFIX = re.compile(r"^(姓名|性别|民族|出生|住址|公民身份号码|签发机关|有效期限)")


def normalise(text: str) -> str:
    # The recogniser sometimes answers full-width digits and letters.
    return unicodedata.normalize("NFKC", text).replace(" ", "")


def _clip_left(quad: np.ndarray, x: float) -> np.ndarray:
    """The part of ``quad`` right of card x-coordinate ``x`` (along its top and bottom)."""
    tl, tr, br, bl = quad
    def at(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        t = (x - a[0]) / max(b[0] - a[0], 1e-6)
        return a + (b - a) * float(np.clip(t, 0, 1))
    return np.array([at(tl, tr), tr, br, at(bl, br)], dtype=np.float32)


def _value_cut(side: str | None, text: str) -> float | None:
    if side == "front":
        digits = sum(ch.isdigit() for ch in text)
        return mm(_NUMBER_VALUE_CUT_MM if digits >= 12 else _FRONT_VALUE_CUT_MM)
    if side == "back":
        return mm(_BACK_VALUE_CUT_MM)
    return None


def _looks_like_id_number(text: str) -> bool:
    """15 to 18 digits (a read may drop some) with a birth date where the number has
    it; a bank card's 16 or 19 digits have none there."""
    digits = re.sub(r"[^0-9X]", "", text.upper())
    if not 15 <= len(digits) <= 18:
        return False
    born = idnumber.birth_date(digits[:14] + "0000")
    return born is not None and 1900 <= born.year <= 2100


# Where the ethnicity's value begins, after its label 民族 (mm).
_ETHNICITY_VALUE_X_MM = 37.0
_LONGEST_LABEL = max(len(lab) for lab in FRONT_LABELS + BACK_LABELS)


def _clip_kept_the_value(whole: str, clipped: str) -> bool:
    """Whether cutting a line at the label column lost only the label: labels have no
    digits and at most six characters (an outline off by a millimetre or two cuts into
    the value instead: '025.03.31-…' for '2025.03.31-…')."""
    def digits(t: str) -> int:
        return sum(ch.isdigit() for ch in t)

    return bool(clipped) and digits(clipped) >= digits(whole) and (
        len(clipped) >= len(whole) - _LONGEST_LABEL)


class _Cropper:
    """Crops lines from the photo itself, through the card's homography.

    One interpolation from the original pixels: cropping from the already-warped card
    image interpolates twice, and the recogniser reads the softer result noticeably
    worse (digits come back full-width or dropped).
    """

    def __init__(self, bgr: np.ndarray, m: np.ndarray) -> None:
        self.bgr, self.m = bgr, m

    def __call__(self, quad: np.ndarray) -> np.ndarray:
        # A little room on the sides: the detector's box can clip a line's last stroke.
        crop = crop_line(self.bgr, to_photo(quad, self.m), pad=0.08, hpad=0.3)
        return stretch_contrast(crop)


def _read_ethnicity_as_choice(
    ocr: OcrEngine, crop: _Cropper, lines: list[TextLine]
) -> list[TextLine]:
    """Re-read the ethnicity value as one of the 56 group names.

    Free-text recognition confuses rare characters ('俬佬' for 仫佬); choosing the most
    likely of the 56 names under the recogniser's own output does not.
    """
    out = []
    for ln in lines:
        in_zone = mm(27) <= ln.x0 and ln.x1 <= mm(56) and mm(12) <= ln.cy <= mm(22)
        value = ln.text.replace("民族", "", 1) if "民族" in ln.text else ln.text
        # A box reaching past the label holds a value even when none was read (畲).
        has_value = bool(value) or ln.x1 > mm(_ETHNICITY_VALUE_X_MM + 2)
        if (in_zone or "民族" in ln.text) and has_value and not any(ch in value for ch in "男女"):
            with_label = "民族" in ln.text
            names = [("民族" + g if with_label else g) for g in ETHNIC_GROUPS]
            best, _margin = ocr.best_of(crop(ln.quad), names, ETHNIC_LOOKALIKES)
            if best:
                ln = TextLine(ln.quad, best, ln.score, ln.label_merged)
        out.append(ln)
    return out


_NAME_LINE = re.compile(r"^(姓名)?[\u4e00-\u9fff·]{1,8}$")


# Name characters are printed in fixed cells about this wide (mm; 3.2 to 4.0 measured
# from the name lines' ends): how many characters a name line holds follows from where
# it ends.
_NAME_PITCH_MM = 3.65


def _name_cells(ln: TextLine) -> int:
    return int(round((ln.x1 - mm(FRONT_VALUE_X_MM)) / mm(_NAME_PITCH_MM)))


def binarise(crop: np.ndarray) -> np.ndarray:
    """Black print on white: the paper's own brightness (glare, shade) divided out and
    each pixel judged against its neighbourhood, so that a faint character under glare
    comes out as dark as the rest."""
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    h = crop.shape[0]
    k = max(3, int(h * 0.6)) | 1
    paper = cv2.GaussianBlur(cv2.dilate(g, np.ones((k, k), np.uint8)), (0, 0), h * 0.3)
    flat = np.clip(g / np.maximum(paper, 1.0) * 255.0, 0, 255).astype(np.uint8)
    b = cv2.adaptiveThreshold(flat, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
                              cv2.THRESH_BINARY, (h // 2) | 1, 8)
    return cv2.cvtColor(b, cv2.COLOR_GRAY2BGR)


def _han(text: str) -> str:
    return "".join(re.findall(r"[\u4e00-\u9fff·]", text))


def _inserts_one(short: str, long: str) -> bool:
    """Whether ``long`` is ``short`` with one character added."""
    return len(long) == len(short) + 1 and any(
        long[:i] + long[i + 1:] == short for i in range(len(long)))


def _recover_lost_character(
    ocr: OcrEngine, crop: _Cropper, ln: TextLine, text: str, before: TextLine | None
) -> str:
    """A name line that ends a cell further right than its reading has characters for
    lost one (a faint character under glare, or the value cut short after a misread
    label): readings that add exactly that one character are looked for in the whole
    line before any cut (its label stripped by position: the two characters of the label
    column) and in the line binarised, and the image decides among them."""
    label = "姓名" if text.startswith("姓名") else ""
    value = text[len(label):]
    if _name_cells(ln) != len(value) + 1:
        return text
    source = before if before is not None else ln
    in_label_column = source.x0 < mm(_FRONT_VALUE_CUT_MM) - mm(1.0)
    image = crop(source.quad)
    binary = binarise(image)
    reads = [source.text] if before is not None else []
    reads += [normalise(ocr.read_single(binary, second=b)[0]) for b in (False, True)]
    options = []
    for read in reads:
        t = _han(read)
        if t.startswith("姓名") or (in_label_column and len(t) >= 3):
            t = t[2:]  # the label column's two characters, however they were read
        if _inserts_one(value, t):
            options.append(t)
    if not options:
        return text
    return label + ocr.choose_by_both(binary, options)


def _value_read_alone(ocr: OcrEngine, crop: _Cropper, ln: TextLine) -> TextLine:
    """A name line read with its label: its value read again on its own, cut at the
    label column. The label beside it changes what the recogniser sees (晴 read as 睛,
    日 as 曰 after 姓名, right alone). Where the two readings differ in a character,
    both models on both images decide between them (the second model only votes: it
    reads characters worse, 岳彤 as 岳形)."""
    cut = mm(_FRONT_VALUE_CUT_MM)
    if not (ln.text.startswith("姓名") and ln.x0 < cut - mm(1.0) and ln.x1 > cut + mm(2.0)):
        return ln
    value = ln.text[2:]
    part = crop(_clip_left(ln.quad, cut))
    alone = normalise(ocr.read_single(part)[0])
    if alone == value or len(alone) != len(value) or not _NAME_LINE.match(alone):
        return ln
    whole = crop(ln.quad)
    best = ocr.choose_across([(whole, [ln.text, "姓名" + alone]), (part, [value, alone])])
    return ln if best == 0 else TextLine(ln.quad, "姓名" + alone, ln.score, ln.label_merged)


# Log-likelihood (nats) below which the first model cannot tell two readings of a name
# apart. Measured on tuning seeds 2300000-2300419, 2600000-2600016 and blur_mild fronts
# 2700000-2700130, 2800000-2800100 (42 name lines the two models read differently, same
# length): the first model's margin was 0.08 on the two where the second was right
# (樊霞 read as 樊露, 覃 as 单, both blurred); where the first was right, 0.67 once
# (娄念, the second sure of 装念) and 1.5 or more on the rest.
FIRST_MODEL_UNSURE = 0.3


def _second_where_first_unsure(ocr: OcrEngine, image: np.ndarray, text: str, other: str
                               ) -> str:
    """The second model's reading of the same length where it differs in a character:
    the second model reads characters worse (岳彤 as 岳形), so it decides only where the
    first model finds both readings about as likely and both models together prefer the
    second's."""
    label = "姓名" if text.startswith("姓名") else ""
    if other == text or not _NAME_LINE.match(other) or not other.startswith(label):
        return text
    first, second = ocr.likelihoods_by_model(image, [text, other])
    if first is None or second is None:
        return text
    if first[0] - first[1] < FIRST_MODEL_UNSURE and first[1] + second[1] > first[0] + second[0]:
        return other
    return text


def _read_name_twice(
    ocr: OcrEngine, crop: _Cropper, lines: list[TextLine],
    before: dict[int, TextLine] | None = None,
) -> list[TextLine]:
    """Read the name line with the second model too, and where the two disagree choose
    the reading both find likeliest.

    A name is a few characters with no context to correct them from, and PP-OCRv6 now
    and then drops a blurred one (宁 for 雷宁) that PP-OCRv4 still sees. Where the two
    disagree on the number of characters, the readings of both, and of the value cut at
    the label column on its own, are scored under both models together.
    """
    out = []
    before = before or {}
    for i, ln in enumerate(lines):
        in_row = (abs(ln.cy - mm(FRONT_NAME_ROW_Y_MM)) < mm(3) and ln.x0 > mm(14)
                  and ln.x1 < mm(FRONT_TEXT_MAX_X_MM))
        if not _NAME_LINE.match(ln.text) or not (ln.text.startswith("姓名") or in_row):
            out.append(ln)
            continue
        ln = _value_read_alone(ocr, crop, ln)
        whole = crop(ln.quad)
        other = normalise(ocr.read_single(whole, second=True)[0])
        if len(other) == len(ln.text):
            text = _second_where_first_unsure(ocr, whole, ln.text, other)
            text = _recover_lost_character(ocr, crop, ln, text, before.get(i))
            out.append(ln if text == ln.text else
                       TextLine(ln.quad, text, ln.score, ln.label_merged))
            continue
        options = [ln.text, other]
        label = "姓名" if ln.text.startswith("姓名") else ""
        cut = mm(_FRONT_VALUE_CUT_MM)
        if label and ln.x0 < cut - mm(1.0) and ln.x1 > cut + mm(2.0):
            part = crop(_clip_left(ln.quad, cut))
            options += [label + normalise(ocr.read_single(part, second=b)[0])
                        for b in (False, True)]
        options = [t for t in options if _NAME_LINE.match(t) and t.startswith(label)]
        best = ocr.choose_by_both(whole, options) or ln.text
        best = _recover_lost_character(ocr, crop, ln, best, before.get(i))
        out.append(TextLine(ln.quad, best, ln.score, ln.label_merged))
    return out


def read_card(ocr: OcrEngine, bgr: np.ndarray, corners: np.ndarray) -> CardRead:
    card, m = rectify_card(bgr, corners)
    # The detector, like the recogniser, misses faint lines of a dim card.
    found = [
        ln for ln in ocr.detect(stretch_contrast(card), max_side=DET_MAX_SIDE)
        if ln.height >= MIN_LINE_HEIGHT_PX and (ln.x1 - ln.x0) >= MIN_LINE_WIDTH_PX
    ]
    if _upside_down(ocr, card, found):
        corners = rotate_180(corners)
        card, m = rectify_card(bgr, corners)
        found = [_flip_line(ln) for ln in found]
    crop = _Cropper(bgr, m)
    # Lines wholly inside the front's label column are the labels 姓名, 性别, 出生, 住址
    # (the back prints nothing there but the emblem): nothing to read, a third less work.
    found = [ln for ln in found if not (ln.x1 < mm(_LABEL_COLUMN_END_MM) and ln.x0 < mm(8.5))]
    texts = ocr.recognize([crop(ln.quad) for ln in found])
    lines = [ln.with_text(normalise(t), s) for ln, (t, s) in zip(found, texts, strict=True)]
    lines = [ln for ln in lines if ln.text]
    front, back = side_evidence(lines)
    side = None
    if front > back and front >= 1:
        side = "front"
    elif back > front and back >= 1:
        side = "back"
    # Lines where the detector joined a label to its value but the label did not come
    # out cleanly (a label character misread): read the value part again on its own.
    redo = []
    for i, ln in enumerate(lines):
        cut = _value_cut(side, ln.text)
        if cut is None or _LABEL_PREFIX.match(ln.text) or is_back_title(ln.text):
            continue
        if ln.x0 < cut - mm(1.0) and ln.x1 > cut + mm(2.0):
            redo.append((i, _clip_left(ln.quad, cut)))
    uncut: dict[int, TextLine] = {}
    if redo:
        again = ocr.recognize([crop(q) for _, q in redo])
        for (i, q), (t, s) in zip(redo, again, strict=True):
            if _clip_kept_the_value(lines[i].text, normalise(t)):
                uncut[i] = lines[i]
                lines[i] = TextLine(q, normalise(t), s, label_merged=True)
    if side == "front":
        lines = _read_name_twice(ocr, crop, lines, uncut)
    # A line read cleanly as "label + value" keeps its text; its box shrinks to the value
    # so that text_location and the landmarks point at the value, not the label.
    for i, ln in enumerate(lines):
        cut = _value_cut(side, ln.text)
        if (cut is not None and _LABEL_PREFIX.match(ln.text)
                and _LABEL_PREFIX.sub("", ln.text) and ln.x0 < cut < ln.x1 - mm(1.0)):
            lines[i] = TextLine(_clip_left(ln.quad, cut), ln.text, ln.score, label_merged=True)
    if side == "front":
        lines = _read_ethnicity_as_choice(ocr, crop, lines)
    lines.sort(key=lambda ln: (ln.cy, ln.x0))
    return CardRead(corners=np.asarray(corners, np.float32), photo_to_card=m, card=card,
                    lines=lines, side=side, side_score=max(front, back))
