"""Interim: a temporary resident ID card (临时居民身份证) instead of the regular card.

What it measures: whether the card's recognised text carries the temporary card's
title. Evidence, strongest first: 临时 anywhere on the card; 临 or 时 just before 居民
(one character misread); a title longer than the regular one (at least two characters
before 民身份证, where the regular card has only 居); on the portrait side, a
title-like line in the top band, where a regular card has no print at all (layout).

Why text: the temporary card says what it is in its title on both faces, and the
reader already recognises every line on the card, so the check costs nothing. A
regular card's back says 居民身份证 too, which is why the two characters 临时 (or a
title in the regular card's empty top band) are what counts.
"""

from __future__ import annotations

import re

from worker.recognition.alerts.base import AlertContext
from worker.recognition.layout import mm

TITLE = "临时居民身份证"
TOP_BAND_MM = 9.0  # a regular card's portrait side has no print above its name row
_NEAR_TITLE = re.compile(r"[临时].?居民|临.?时")
_LONG_TITLE = re.compile(r"..居?民身份证")

# Score per piece of evidence (the strongest found counts).
SCORE_EXACT = 97
SCORE_NEAR = 90
SCORE_LONG_TITLE = 80
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
        if ctx.side == "front":
            title_chars = set(TITLE)
            for ln in ctx.lines:
                if ln.cy < mm(TOP_BAND_MM) and sum(ch in title_chars for ch in ln.text) >= 4:
                    return SCORE_TOP_BAND
        return SCORE_NONE
