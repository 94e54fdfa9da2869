"""Citizen ID number (GB 11643-1999) rules and OCR repair.

An 18-character number is ``RRRRRR YYYYMMDD SSS C``: a 6-digit administrative division
code (GB/T 2260, the place of first registration), the birth date, a sequence code whose
last digit is odd for men and even for women, and an ISO 7064 MOD 11-2 check character
(``0``-``9`` or ``X``).
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import date
from importlib import resources

__all__ = [
    "MIN_BIRTH_YEAR",
    "birth_date",
    "check_digit",
    "is_valid_region",
    "normalise_number",
    "region_names",
    "repair_number",
    "sex",
    "valid_number",
]

# Nobody alive was born before this; it also rejects garbage years such as 0199.
MIN_BIRTH_YEAR = 1880

# Weight of position i (0-based, left to right) is 2**(17-i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# Check character indexed by (sum of weighted digits) mod 11.
_CHECK_CHARS = "10X98765432"

# Names that appear at the prefecture level of GB/T 2260 but are grouping placeholders,
# not place names (e.g. 110100 市辖区 under Beijing); region_names() reports them as "".
_PLACEHOLDER_CITY_NAMES = frozenset(
    {"市辖区", "县", "省直辖县级行政单位", "省直辖行政单位", "自治区直辖县级行政单位"}
)


@functools.cache
def _region_table() -> dict[str, str]:
    """code -> latest name, loaded once from data/region_codes.tsv."""
    text = (
        resources.files("worker.recognition")
        .joinpath("data", "region_codes.tsv")
        .read_text(encoding="utf-8")
    )
    table: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code, name = line.split("\t", 1)
        table[code] = name
    return table


def check_digit(first17: str) -> str:
    """The GB 11643 check character ('0'-'9' or 'X') for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError(f"expected 17 ASCII digits, got {first17!r}")
    total = sum(int(ch) * w for ch, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def is_valid_region(code6: str) -> bool:
    """True if ``code6`` is a division code that is or ever was in GB/T 2260.

    Abolished codes count: a number keeps the code it was first issued with.
    """
    return len(code6) == 6 and code6 in _region_table()


def _is_shape_ok(number: str) -> bool:
    return (
        len(number) == 18
        and number.isascii()
        and number[:17].isdigit()
        and (number[17].isdigit() or number[17] == "X")
    )


def birth_date(number: str) -> date | None:
    """The birth date encoded in digits 7-14 of an 18-character number, if a real date.

    Does not look at the checksum or the region; see :func:`valid_number`.
    """
    if len(number) != 18 or not number.isascii():
        return None
    digits = number[6:14]
    if not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def sex(number: str) -> str | None:
    """'男' if the 17th character is odd, '女' if even, None if it is not a digit."""
    if len(number) != 18 or not number.isascii() or not number[16].isdigit():
        return None
    return "男" if int(number[16]) % 2 else "女"


def valid_number(number: str, today: date | None = None) -> bool:
    """GB 11643 rule check, as the document's ``valid_number``.

    18 characters, 17 digits then a digit or 'X' (a lower-case 'x' is accepted, since it
    is the same character), the MOD 11-2 checksum, a known region code, and a real birth
    date between 1880-01-01 and ``today`` (default: the local date).
    """
    number = number.upper()
    if not _is_shape_ok(number):
        return False
    if check_digit(number[:17]) != number[17]:
        return False
    if not is_valid_region(number[:6]):
        return False
    born = birth_date(number)
    if born is None or born.year < MIN_BIRTH_YEAR:
        return False
    return born <= (today or date.today())


def region_names(number: str) -> tuple[str, str, str]:
    """(province, city, county) names for the region code of ``number``.

    Accepts a full number or just its first six digits. A level that is unknown, not
    applicable (a province-level code has no city or county) or only a placeholder
    such as 市辖区 is "".
    """
    code = number[:6]
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return ("", "", "")
    table = _region_table()
    province = table.get(code[:2] + "0000", "")
    city = ""
    county = ""
    if code[2:4] != "00":
        city = table.get(code[:4] + "00", "")
        if city in _PLACEHOLDER_CITY_NAMES:
            city = ""
    if code[4:6] != "00":
        county = table.get(code, "")
    return (province, city, county)


# ---------------------------------------------------------------------------
# OCR repair
# ---------------------------------------------------------------------------

# Letters and symbols that OCR engines return for digits printed in the card's font.
# fmt: off
_CHAR_FIXES = {
    "O": "0", "o": "0", "D": "0", "Q": "0", "U": "0", "〇": "0", "○": "0", "°": "0",
    "I": "1", "l": "1", "|": "1", "i": "1", "L": "1", "!": "1", "丨": "1", "J": "1",
    "Z": "2", "z": "2",
    "S": "5", "s": "5",
    "b": "6", "G": "6",
    "T": "7",
    "B": "8",
    "g": "9", "q": "9",
    "x": "X", "×": "X", "χ": "X", "Χ": "X", "✕": "X", "╳": "X", "ⅹ": "X", "Ⅹ": "X",
}

# Digits that are easily mistaken for one another in the card's number font. Pairs are
# symmetric; keep the list short, because every extra pair adds candidates and so makes
# a wrong-but-valid repair more likely.
_CONFUSABLE_PAIRS = (
    ("1", "7"), ("1", "4"), ("3", "8"), ("6", "8"), ("0", "8"), ("5", "6"),
    ("8", "9"), ("0", "6"), ("0", "9"), ("3", "5"), ("2", "7"),
)
# fmt: on
_CONFUSABLE: dict[str, tuple[str, ...]] = {}
for _a, _b in _CONFUSABLE_PAIRS:
    _CONFUSABLE[_a] = (*_CONFUSABLE.get(_a, ()), _b)
    _CONFUSABLE[_b] = (*_CONFUSABLE.get(_b, ()), _a)
del _a, _b
# The check character X is sometimes read as a look-alike digit and vice versa.
_CONFUSABLE_LAST = {"X": ("1", "4", "7"), "1": ("X",), "4": ("X",), "7": ("X",)}

# How many of the least-confident positions to try when confidences are given.
_REPAIR_POSITIONS = 4

_LABEL = "公民身份号码"


def _normalise_with_conf(
    candidate: str, confidences: list[float] | None
) -> tuple[str, list[float] | None]:
    """Map look-alike characters to digits/X and drop everything else, keeping the
    per-character confidences aligned with what is kept."""
    if confidences is not None and len(confidences) != len(candidate):
        confidences = None  # misaligned scores are worse than none
    label_at = candidate.find(_LABEL)
    if label_at >= 0:
        cut = label_at + len(_LABEL)
        candidate = candidate[cut:]
        confidences = confidences[cut:] if confidences is not None else None
    out: list[str] = []
    conf_out: list[float] = []
    for i, ch in enumerate(candidate):
        ch = unicodedata.normalize("NFKC", ch)  # full-width digits and letters
        if len(ch) != 1:
            continue
        ch = _CHAR_FIXES.get(ch, ch)
        if ch.isascii() and (ch.isdigit() or ch == "X"):
            out.append(ch)
            if confidences is not None:
                conf_out.append(float(confidences[i]))
    return "".join(out), (conf_out if confidences is not None else None)


def normalise_number(candidate: str) -> str:
    """Upper-case, map OCR look-alikes (O→0, l→1, ×→X, ...) and drop other characters."""
    return _normalise_with_conf(candidate, None)[0]


def _positions_to_try(length: int, confidences: list[float] | None) -> list[int]:
    if confidences is None:
        return list(range(length))
    # The (up to) _REPAIR_POSITIONS lowest scores below the best one, ties included.
    # Scores that are all equal (e.g. one score per text line) say nothing: try all.
    top = max(confidences)
    doubtful = sorted(c for c in confidences if c < top)
    if not doubtful:
        return list(range(length))  # uniform scores carry no position information
    cutoff = doubtful[min(_REPAIR_POSITIONS, len(doubtful)) - 1]
    return [i for i, c in enumerate(confidences) if c <= cutoff]


def _substitutions(number: str, positions: list[int]) -> set[str]:
    out: set[str] = set()
    for i in positions:
        alternatives = _CONFUSABLE_LAST.get(number[i], ()) if i == 17 else ()
        alternatives = (*_CONFUSABLE.get(number[i], ()), *alternatives)
        for alt in alternatives:
            out.add(number[:i] + alt + number[i + 1 :])
    return out


def repair_number(candidate: str, confidences: list[float] | None = None) -> str:
    """Best 18-character reading of an OCR'd ID number, or the normalised input.

    ``confidences``, when given, has one score per character of ``candidate``.

    1. Normalise: drop spaces and other noise, map look-alikes (O/o/D→0, I/l/|/i→1, Z→2,
       S→5, B→8, G→6, x/×/χ→X, full-width forms).
    2. If the result is valid (checksum, region code, birth date), return it.
    3. Otherwise build candidates that differ by one plausible OCR slip: a confusable
       digit at one position (only the least-confident positions when ``confidences``
       are given), or one extra character removed (19 read) / one missing character
       inserted (17 read).
    4. Return the candidate only if exactly one of them is fully valid; otherwise the
       normalised input unchanged. The function never invents a number that nothing
       supports: when in doubt, it returns what was read.
    """
    number, conf = _normalise_with_conf(candidate, confidences)
    today = date.today()
    if valid_number(number, today):
        return number

    candidates: set[str] = set()
    if len(number) == 18:
        # A single wrong character always breaks the checksum (weights are non-zero mod
        # 11), so when the checksum already holds one substitution cannot help.
        if _is_shape_ok(number) and check_digit(number[:17]) == number[17]:
            return number
        candidates = _substitutions(number, _positions_to_try(18, conf))
    elif len(number) == 19:
        drop = _positions_to_try(19, conf)
        candidates = {number[:i] + number[i + 1 :] for i in drop}
    elif len(number) == 17:
        for i in range(18):
            for ch in "0123456789X" if i == 17 else "0123456789":
                candidates.add(number[:i] + ch + number[i:])

    valid = [c for c in candidates if valid_number(c, today)]
    if len(valid) == 1:
        return valid[0]
    return number
