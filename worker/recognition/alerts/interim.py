"""Interim: a temporary resident ID card (临时居民身份证) instead of the regular card.

What it measures: whether the card's recognised text carries the temporary card's
title. Evidence, strongest first: 临时 anywhere on the card; 临 or 时 just before 居民
(one character misread); a title longer than the regular one (at least two characters
before 民身份证, where the regular card has only 居); on the portrait side, a
title-like line in the top band, where a regular card has no print at all (layout).

On the emblem side also a validity period of at most VALIDITY_MAX_DAYS (a temporary card
is valid for three months; a regular card for 5, 10 or 20 years or 长期).

:func:`wraps_like_temporary` is weaker evidence, used by other detectors only: the
temporary card's portrait side wraps the address after 12 characters, the regular card
after 11. One character added by the reader to a regular card's line looks the same,
so it does not raise this alert; the detectors that compare the card with the regular
layout (tampering's typesetting) do not judge such a card.

Why text: the temporary card says what it is in its title on both faces, and the
reader already recognises every line on the card, so the check costs nothing. A
regular card's back says 居民身份证 too, which is why the two characters 临时 (or a
title in the regular card's empty top band) are what counts.
"""

from __future__ import annotations

import re
from datetime import date

from worker.recognition.alerts.base import AlertContext
from worker.recognition.layout import mm
from worker.recognition.ocr import TextLine

TITLE = "临时居民身份证"
TOP_BAND_MM = 9.0  # a regular card's portrait side has no print above its name row
_NEAR_TITLE = re.compile(r"[临时].?居民|临.?时")
_LONG_TITLE = re.compile(r"..居?民身份证")
_VALIDITY = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})-(\d{4})\.(\d{2})\.(\d{2})")
VALIDITY_MAX_DAYS = 183
TEMPORARY_WRAP = 12  # characters per address line: 11 on a regular card
_CAPTIONS = ("姓名", "性别", "民族", "出生", "公民")
_DATE = re.compile(r"\d{4}年\d{1,2}月\d{1,2}日")

# Score per piece of evidence (the strongest found counts).
SCORE_EXACT = 97
SCORE_NEAR = 90
SCORE_LONG_TITLE = 80
SCORE_SHORT_VALIDITY = 85
SCORE_TOP_BAND = 65
SCORE_NONE = 2


class InterimDetector:
    name = "interim"

    def score(self, ctx: AlertContext) -> int:
        texts = [ln.text for ln in ctx.lines]
        joined = "".join(texts)
        if "临时" in joined:
            return SCORE_EXACT
        if _NEAR_TITLE.search(joined):
            return SCORE_NEAR
        if any(_LONG_TITLE.search(t) for t in texts):
            return SCORE_LONG_TITLE
        if ctx.side == "back" and any(_short_validity(t) for t in texts):
            return SCORE_SHORT_VALIDITY
        if ctx.side == "front":
            title_chars = set(TITLE)
            for ln in ctx.lines:
                if ln.cy < mm(TOP_BAND_MM) and sum(ch in title_chars for ch in ln.text) >= 4:
                    return SCORE_TOP_BAND
        return SCORE_NONE


def _short_validity(text: str) -> bool:
    """Whether ``text`` holds a validity period ending after its start by at most
    VALIDITY_MAX_DAYS (a misread digit giving an end before the start does not count)."""
    m = _VALIDITY.search(text)
    if not m:
        return False
    try:
        start = date(int(m[1]), int(m[2]), int(m[3]))
        end = date(int(m[4]), int(m[5]), int(m[6]))
    except ValueError:
        return False
    return 0 < (end - start).days <= VALIDITY_MAX_DAYS


def wraps_like_temporary(lines: list[TextLine], side: str | None) -> bool:
    """Whether the portrait side has an address line of TEMPORARY_WRAP characters (the
    temporary card's wrap; a regular card wraps after 11)."""
    if side != "front":
        return False
    for ln in lines:
        text = ln.text[2:] if ln.text.startswith("住址") else ln.text
        if text.startswith(_CAPTIONS) or _DATE.search(text):
            continue
        if sum(ch.isdigit() for ch in text) >= 15:
            continue  # the number
        wide = sum(ord(ch) >= 0x2E80 for ch in text)
        if len(text) == TEMPORARY_WRAP and wide >= TEMPORARY_WRAP // 2:
            return True
    return False
