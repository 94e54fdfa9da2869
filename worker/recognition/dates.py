"""Parsing the card's printed dates out of OCR text.

Front: 出生 1990年1月1日 (month and day without leading zeros).
Back:  有效期限 2015.06.01-2035.06.01, or 2015.06.01-长期 for holders aged 46 and over.

Both parsers are deliberately strict about the digits (no guessing of a missing digit)
and lenient about everything around them (spaces, separators, look-alike letters).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

__all__ = ["LONG_TERM", "parse_birth", "parse_validity"]

LONG_TERM = "长期"
# Periods a resident ID card can have besides 长期 (居民身份证法 第五条), in years.
VALIDITY_YEARS = (5, 10, 20)

# Years outside this range are OCR garbage, not a date on a living person's card.
_MIN_YEAR = 1880
_MAX_YEAR = 2200

# Latin letters / symbols that OCR returns for digits. Chinese characters are untouched.
# fmt: off
_DIGIT_FIXES = str.maketrans(
    {
        "O": "0", "o": "0", "D": "0", "Q": "0", "〇": "0", "○": "0",
        "I": "1", "l": "1", "|": "1", "i": "1", "丨": "1", "!": "1",
        "Z": "2", "z": "2",
        "S": "5", "s": "5",
        "b": "6", "G": "6",
        "B": "8",
        "g": "9", "q": "9",
    }
)
# fmt: on

# The second character of 长期 as OCR engines misread it: characters sharing its 月 or
# 其 component. Only these, paired with 长 (or 長), are read as 长期.
_QI_LOOKALIKES = frozenset("期朝明其棋欺斯朔骐祺旗胡")
_CHANG_FORMS = frozenset("长長")
# What may separate the start date from the end: dashes of every width, the Chinese
# 一 that OCR often returns for a dash, tildes, 至.
_RANGE_NOISE = re.compile(r"[-‐‑‒–—―−﹣－ー一~～_至.,·。:：;；'\"、/\\]+")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width digits, punctuation
    text = re.sub(r"\s+", "", text)
    return text.translate(_DIGIT_FIXES)


def _make_date(year: int, month: int, day: int) -> date | None:
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_birth(text: str) -> str | None:
    """'1990年1月1日' (and OCR variants) → '1990-01-01'; None unless a real date.

    Accepts spaces anywhere, a missing 日, 'O' for 0 and similar look-alikes, and the
    label 出生 in front; also a bare 'YYYYMMDD' or 'YYYY-MM-DD'. Digit runs must be
    unambiguous (year of 4 digits, month and day of 1-2 digits each, or one run of 8):
    '1990年111日' could be 1 Nov or 11 Jan and gives None.
    """
    groups = re.findall(r"\d+", _normalise(text))
    if len(groups) == 1 and len(groups[0]) == 8:
        g = groups[0]
        groups = [g[:4], g[4:6], g[6:]]
    if len(groups) != 3:
        return None
    y, m, d = groups
    if len(y) != 4 or not 1 <= len(m) <= 2 or not 1 <= len(d) <= 2:
        return None
    born = _make_date(int(y), int(m), int(d))
    return born.isoformat() if born else None


def _eight_digit_date(digits: str) -> date | None:
    return _make_date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))


def _is_long_term(rest: str) -> bool:
    """True only if what follows the start date clearly reads 长期."""
    rest = _RANGE_NOISE.sub("", rest)
    if rest == LONG_TERM:
        return True
    return len(rest) == 2 and rest[0] in _CHANG_FORMS and rest[1] in _QI_LOOKALIKES


def parse_validity(text: str) -> tuple[str, str] | None:
    """'2015.06.01-2035.06.01' → ('2015-06-01', '2035-06-01'); '2015.06.01-长期' →
    ('2015-06-01', '长期'). None unless both parts are certain.

    The card always prints YYYY.MM.DD with two-digit month and day, so the digits alone
    fix the dates: exactly 16 digits (start and end) or 8 digits followed by 长期.
    Separators may be missing, doubled, spaced or any dash ('2015. 06. 01—2035.06.01',
    '20150601-20350601'); 长 followed by a look-alike of 期 (长朝, 长明, 长其) is 长期,
    anything else (长, 期, 长X) is not.
    """
    cleaned = _normalise(text)
    digit_positions = [i for i, ch in enumerate(cleaned) if ch.isdigit()]
    digits = "".join(cleaned[i] for i in digit_positions)
    if len(digits) == 16:
        start = _eight_digit_date(digits[:8])
        end = _eight_digit_date(digits[8:])
        if start is None or end is None:
            return None
        return (start.isoformat(), end.isoformat())
    if len(digits) == 14:
        # The start's century cut off ('25.11.28-2045.11.28', the line clipped at the
        # label): a period runs 5, 10 or 20 years to the same day, which fixes it.
        end = _eight_digit_date(digits[6:])
        if end is None or digits[2:6] != digits[10:14]:
            return None
        years = [end.year - n for n in VALIDITY_YEARS if (end.year - n) % 100 == int(digits[:2])]
        start = _make_date(years[0], end.month, end.day) if len(years) == 1 else None
        return (start.isoformat(), end.isoformat()) if start else None
    if len(digits) == 8:
        start = _eight_digit_date(digits)
        if start is None:
            return None
        # 长期 must come after the start date, not before it.
        if _is_long_term(cleaned[digit_positions[-1] + 1 :]):
            return (start.isoformat(), LONG_TERM)
    return None
