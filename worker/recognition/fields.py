"""Turn the recognised lines of an upright card into the vendor's fields.

The card's layout is fixed, so a line's position says which field it is; its label
(姓名, 住址 ...) confirms it when the detector kept label and value together. What is
known about the values is used to read better than generic OCR: the ID number's
checksum, the closed list of ethnic groups, real calendar dates, and the birth date and
sex that the number itself carries.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from worker.recognition import dates, ethnicity, idnumber, places
from worker.recognition.layout import (
    FRONT_BIRTH_ROW_Y_MM,
    FRONT_NUMBER_ROW_Y_MM,
    FRONT_ROW_PITCH_MM,
    FRONT_TEXT_MAX_X_MM,
    FRONT_VALUE_X_MM,
    is_back_title,
    mm,
)
from worker.recognition.ocr import TextLine
from worker.recognition.surnames import (
    HAN_SURNAME_GROUPS,
    SINGLE_SURNAMES,
    has_known_surname,
)

FRONT_ROW_PITCH = mm(FRONT_ROW_PITCH_MM)

FRONT_FIELDS = ("name", "sex", "ethnicity", "birth", "address", "number")
BACK_FIELDS = ("issue", "valid_from", "valid_to")

_LABEL_RE = re.compile(
    r"^(姓\s*名|性\s*别|民\s*族|出\s*生|住\s*址|公民身份号码|公民身份号|身份号码|签发机关|有效期限)"
)
_CONFUSED_DIGITS = str.maketrans({
    "O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1", "|": "1", "i": "1",
    "Z": "2", "z": "2", "S": "5", "s": "5", "B": "8", "G": "6", "b": "6", "g": "9",
    "x": "X", "×": "X", "Х": "X", "χ": "X",
})
_MIDDLE_DOTS = "·•・.。‧∙⋅-—"


@dataclass
class CardFields:
    values: dict[str, str] = field(default_factory=dict)
    # Card-coordinate quads (4×2) of each field's value, for text_location.
    quads: dict[str, np.ndarray] = field(default_factory=dict)
    # Fields whose box was cut from a "label + value" line: its left edge is not the
    # value's start.
    label_merged: set[str] = field(default_factory=set)


def strip_label(text: str) -> str:
    return _LABEL_RE.sub("", text, count=1)


def _union_quad(lines: list[TextLine]) -> np.ndarray:
    pts = np.concatenate([ln.quad for ln in lines])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _rows(lines: list[TextLine]) -> list[list[TextLine]]:
    """Group lines whose vertical extents overlap into rows, top to bottom."""
    rows: list[list[TextLine]] = []
    for ln in sorted(lines, key=lambda ln: ln.cy):
        if rows:
            last = rows[-1]
            top = min(x.y0 for x in last)
            bottom = max(x.y1 for x in last)
            overlap = min(bottom, ln.y1) - max(top, ln.y0)
            if overlap > 0.5 * min(ln.height, bottom - top):
                last.append(ln)
                continue
        rows.append([ln])
    return [_drop_label_overlaps(sorted(r, key=lambda ln: ln.x0)) for r in rows]


def _drop_label_overlaps(row: list[TextLine]) -> list[TextLine]:
    """Drop a label line whose tail overlaps the value line next to it.

    The detector sometimes returns both "label + first character" and the whole value;
    the first character would then be read twice.
    """
    out = []
    for a in row:
        rest = strip_label(a.text)
        # The value line starts inside or right after the label line (or even before
        # it: a label box cut to its value can sit inside the value's box).
        clash = (_LABEL_RE.match(a.text) is not None and len(rest) <= 2) and any(
            b is not a and b.x0 < a.x1 + 0.2 * a.height and b.x1 > a.x1 for b in row
        )
        if not clash:
            out.append(a)
    return out


def _row_text(row: list[TextLine]) -> str:
    return "".join(ln.text for ln in row)


def _row_y(row: list[TextLine]) -> float:
    return sum(ln.cy for ln in row) / len(row)


def _number_candidate(text: str) -> str:
    t = strip_label(text).translate(_CONFUSED_DIGITS)
    return re.sub(r"[^0-9X]", "", t)


# Reads one line again as whichever of the candidate texts the image shows best.
class LineChooser(Protocol):
    """Which of ``options`` the line's image shows; ``priors`` are log-odds to add."""

    def __call__(self, line: TextLine, options: list[str],
                 priors: list[float] | None = None) -> str: ...


# Reads the number line again as a valid 18-character ID number, or None.
NumberReader = Callable[[TextLine], "str | None"]
# Readings of a line with room for one more character at its right end.
LineExtender = Callable[[TextLine], list[str]]


def _tie_breaker(lines: list[TextLine], choose: LineChooser | None) -> places.TieBreaker | None:
    """Turn a line chooser into a tie breaker for place names: find the line holding
    the misread name and ask which candidate name the line's image shows."""
    if choose is None:
        return None

    def breaker(read: str, names: list[str]) -> str | None:
        for ln in lines:
            if read in ln.text:
                options = [ln.text.replace(read, name, 1) for name in names]
                # The reading itself is a candidate too (a name the table lacks), but a
                # table name is the likelier thing for a card to print.
                priors = [0.0 if name == read else TABLE_NAME_PRIOR for name in names]
                best = choose(ln, options, priors)
                return names[options.index(best)] if best in options else None
        return None

    return breaker


def parse_front(
    lines: list[TextLine],
    choose: LineChooser | None = None,
    read_number: NumberReader | None = None,
    read_on: LineExtender | None = None,
) -> CardFields:
    out = CardFields()
    # The number: the line with the most digits, in the bottom part of the card.
    best, best_digits = None, 0
    for ln in lines:
        cand = _number_candidate(ln.text)
        if len(cand) >= 15 and len(cand) > best_digits and ln.cy > mm(30):
            best, best_digits = ln, len(cand)
    number_y = mm(FRONT_NUMBER_ROW_Y_MM)
    if best is not None:
        number_y = best.cy
        # The detector may split the number; pieces to its right on the same row join it.
        pieces = [best] + sorted(
            (ln for ln in lines if ln is not best and ln.x0 > best.x1 - best.height
             and abs(ln.cy - best.cy) < 0.5 * best.height
             and 0 < len(_number_candidate(ln.text)) <= 18 - best_digits),
            key=lambda ln: ln.x0,
        )
        text = "".join(_number_candidate(ln.text) for ln in pieces)
        out.values["number"] = _read_number(
            text, min(ln.score for ln in pieces), best if len(pieces) == 1 else None, read_number
        )
        out.quads["number"] = _union_quad(pieces)
        if best.label_merged:
            out.label_merged.add("number")
    # Text in the left column above the number row; the portrait side is excluded.
    column = [
        ln for ln in lines
        if ln is not best and ln.x0 < mm(FRONT_TEXT_MAX_X_MM) and ln.cy < number_y - mm(3)
    ]
    # Lines that are only a label carry no value; so does a line ending left of where
    # values begin (a label the recogniser misread).
    values = [
        ln for ln in column
        if strip_label(ln.text).strip() and ln.x1 > mm(FRONT_VALUE_X_MM - 0.5)
    ]
    rows = _rows(values)

    def row_with(pred) -> int | None:
        for i, r in enumerate(rows):
            if pred(r):
                return i
        return None

    sex_i = row_with(lambda r: re.search("[男女]", strip_label(_row_text(r))) is not None
                     or "民族" in _row_text(r) or "性别" in _row_text(r))
    # The birth row: one that reads as a date, else one that looks like it (a digit
    # run of 4 alone is a card number's tail as often as a year).
    birth_i = row_with(lambda r: dates.parse_birth(strip_label(_row_text(r))) is not None)
    if birth_i is None:
        birth_i = row_with(lambda r: re.search(r"\d{3,4}.*[年月日]|(?:19|20)\d{2}",
                                               _row_text(r)) is not None)
    name_i: int | None = None
    name_lines: list[TextLine] = []
    above_birth = sex_i is None and birth_i is not None and birth_i >= 1
    if above_birth:
        # The row above the birth date: the sex row one pitch up, or, when the sex row
        # was not found at all, the name two pitches up.
        gap = _row_y(rows[birth_i]) - _row_y(rows[birth_i - 1])
        if gap < 1.5 * FRONT_ROW_PITCH:
            sex_i = birth_i - 1
        elif (gap < 2.5 * FRONT_ROW_PITCH and abs(_row_y(rows[birth_i])
                                                   - mm(FRONT_BIRTH_ROW_Y_MM)) < FRONT_ROW_PITCH):
            name_i = birth_i - 1
    if birth_i is None and sex_i is not None and sex_i + 1 < len(rows):
        birth_i = sex_i + 1
    if name_i is None and sex_i is not None:
        name_i = sex_i - 1
    elif name_i is None and not above_birth and birth_i != 0 and rows:
        name_i = 0  # neither sex nor birth row found: the first row is the name

    if name_i is not None and name_i >= 0:
        row = _name_row(rows[name_i], _value_column_x(rows[:name_i] + rows[name_i + 1:]))
        if row:
            name_lines = row
            out.values["name"] = _clean_name("".join(strip_label(ln.text) for ln in row))
            out.quads["name"] = _union_quad(row)
            if row[0].label_merged:
                out.label_merged.add("name")
    if sex_i is not None:
        _parse_sex_row(rows[sex_i], out)
    if "ethnicity" not in out.values:
        _ethnicity_off_its_row(values, out)
    if (choose is not None and out.values.get("name")
            and out.values.get("ethnicity") in HAN_SURNAME_GROUPS):
        out.values["name"] = _surname_checked(out.values["name"], name_lines[0], choose)
    if birth_i is not None:
        row = rows[birth_i]
        text = strip_label(_row_text(row))
        parsed = dates.parse_birth(text)
        if parsed:
            out.values["birth"] = _birth_against_number(
                parsed, out.values.get("number", ""), row, choose)
        out.quads["birth"] = _union_quad(row)
        if row[0].label_merged:
            out.label_merged.add("birth")
    start = (birth_i + 1) if birth_i is not None else (sex_i + 2 if sex_i is not None else None)
    if start is not None and start < len(rows):
        addr_lines = [ln for r in rows[start:] for ln in r if ln.x1 > mm(FRONT_VALUE_X_MM)]
        addr_lines = _without_stray_symbols(addr_lines, choose)
        if addr_lines:
            text = "".join(strip_label(ln.text) for ln in addr_lines)
            # No address starts with 住 or 址: they are what is left of a misread label.
            text = re.sub(r"^[住址:：]+", "", re.sub(r"\s+", "", text))
            if read_on is not None and re.search(r"\d$", text):
                text += _lost_address_end(addr_lines[-1], read_on)
            out.values["address"] = places.correct_address(
                text, out.values.get("number", ""), _tie_breaker(addr_lines, choose)
            )
            out.quads["address"] = _union_quad(addr_lines)
    _fill_from_number(out)
    return out


# Log-odds for a place name from the region table over the same span as read, when the
# reading is not in the table.
TABLE_NAME_PRIOR = 4.0
# Log-odds for the number's birth date over a different one read on the birth line.
BIRTH_NUMBER_PRIOR = 4.0


def _birth_against_number(
    birth: str, number: str, row: list[TextLine], choose: LineChooser | None
) -> str:
    """The birth date as read, unless it differs from a valid number's and the line's
    image finds the number's date the likelier reading (a 5 read as 6 in low light).

    The image decides, not the number: a card whose printed date really differs from
    its number keeps the printed date, for ``valid_birth`` to flag, when the image shows
    it clearly (by more than ``BIRTH_NUMBER_PRIOR`` nats: a genuine card never differs,
    a blurred digit often does).
    """
    born = idnumber.birth_date(number) if idnumber.valid_number(number) else None
    if born is None or born.isoformat() == birth or choose is None or len(row) != 1:
        return birth
    line = row[0]
    options = [_with_date(line.text, d) for d in (birth, born.isoformat())]
    picked = choose(line, options, [0.0, BIRTH_NUMBER_PRIOR])
    return born.isoformat() if picked == options[1] else birth


def _with_date(text: str, iso: str) -> str:
    """``text`` (a birth line as read) with its year, month and day replaced."""
    y, m, d = iso.split("-")
    parts = iter((y, str(int(m)), str(int(d))))
    if len(re.findall(r"\d+", text)) != 3:
        return f"{y}年{int(m)}月{int(d)}日"
    return re.sub(r"\d+", lambda _m: next(parts), text)


def _parse_sex_row(row: list[TextLine], out: CardFields) -> None:
    text = _row_text(row)
    text = text.replace("性别", "").replace("民族", "|")
    m = re.search("[男女]", text)
    sex_lines, eth_lines = [], []
    for ln in row:
        (eth_lines if ln.x0 > mm(28) else sex_lines).append(ln)
    if m:
        out.values["sex"] = m.group(0)
        rest = text[m.end():]
    else:
        rest = text.split("|", 1)[-1]
    rest = rest.replace("|", "")
    # The group name ends the row: an exact name at the end beats fuzzy matching of
    # whatever a misread label left in front of it ('民房汉').
    eth = next((rest[-k:] for k in (4, 3, 2, 1)
                if len(rest) >= k and rest[-k:] in ethnicity.ETHNIC_GROUPS), None)
    if eth is None and rest:
        eth = ethnicity.match_ethnicity(rest)
    if eth:
        out.values["ethnicity"] = eth
    if sex_lines:
        out.quads["sex"] = _union_quad(sex_lines)
    if eth_lines:
        out.quads["ethnicity"] = _union_quad(eth_lines)


# Symbols no address prints: a recogniser's [ or + in one is a misread character (门
# read as [1 under blur, 4 as + under glare).
_STRAY_SYMBOL = re.compile(r"[\[\]{}|!?+<>~^*=@$%&_;]")
# What such a symbol stands for: a digit or a word that counts an address's parts.
_ADDRESS_UNITS = "0123456789号室门栋楼单元层幢弄组村户附街路巷"


def _without_stray_symbols(lines: list[TextLine], choose: LineChooser | None
                           ) -> list[TextLine]:
    """Address lines with each stray symbol replaced by what the image shows there: the
    symbol dropped, or it (alone, or with the character beside it: 门 split as [1) read
    as a digit or a unit word, whichever the recogniser finds likeliest in the line."""
    if choose is None:
        return lines
    out = []
    for ln in lines:
        for _ in range(3):
            m = _STRAY_SYMBOL.search(ln.text)
            if m is None:
                break
            t, i = ln.text, m.start()
            options = [t[:i] + t[i + 1:]]
            for unit in _ADDRESS_UNITS:
                options.append(t[:i] + unit + t[i + 1:])
                if i + 1 < len(t):
                    options.append(t[:i] + unit + t[i + 2:])
                if i > 0:
                    options.append(t[:i - 1] + unit + t[i + 1:])
            best = choose(ln, list(dict.fromkeys(options)))
            if _STRAY_SYMBOL.search(best[:i + 1]) is not None:
                break  # no better reading than the symbol (cannot happen: dropped is one)
            ln = TextLine(ln.quad, best, ln.score, ln.label_merged)
        out.append(ln)
    return out


def _lost_address_end(last: TextLine, read_on: LineExtender) -> str:
    """The character an address lost at its end, or "".

    An address ends in what the number counts (号, 室, 组, 栋, 村 ...), never in a
    digit; one read ending in a digit lost its last character (faint under glare, or
    outside the detected box). The last line is read again with room for one more
    character; the Han character that readings add after its text's end (its last
    three characters: the rest may be read differently) is taken, the most often added
    one where they differ."""
    tail = re.sub(r"\s+", "", strip_label(last.text))[-3:]
    added = Counter(
        r[-1] for r in (re.sub(r"\s+", "", x) for x in read_on(last))
        if tail and r[:-1].endswith(tail) and "\u4e00" <= r[-1] <= "\u9fff")
    return added.most_common(1)[0][0] if added else ""


# Log-odds for a known surname over a first character that is none: a listed surname
# is borne by about a thousandth of people or more, all unlisted ones together by a few
# thousandths spread over thousands of characters (ln 1000 ~ 7).
SURNAME_PRIOR = 7.0


def _surname_checked(name: str, first: TextLine, choose: LineChooser) -> str:
    """A Han name whose first character is no known surname, read again as a choice
    between the reading and every surname in its place, with odds for a surname.

    Under blur 殷 comes out as 股 and 臧 as 减, characters no one is named by; a rare
    surname printed clearly keeps its reading, its look-alikes being far less likely in
    the image. Only for the ethnic groups whose names start with a surname
    (:data:`HAN_SURNAME_GROUPS`): Tibetan and Mongolian names (洛桑卓玛, 其其格) have
    none."""
    if len(name) < 2 or "·" in name or has_known_surname(name):
        return name
    text = first.text
    at = text.find(name[0], 2 if text.startswith("姓名") else 0)
    if at < 0:
        return name
    options = [text] + [text[:at] + s + text[at + 1:] for s in sorted(SINGLE_SURNAMES)]
    best = choose(first, options, [0.0] + [SURNAME_PRIOR] * (len(options) - 1))
    if best == text or best not in options:
        return name
    return best[at] + name[1:]


def _ethnicity_off_its_row(lines: list[TextLine], out: CardFields) -> None:
    """The ethnicity from a line read as its label and a group's exact name, wherever
    that line lies: an outline a little off the card's (a wrong corner) tilts the print
    in the card image, and 民族 at the right end of the sex row then sits half a row
    lower, a row of its own."""
    for ln in lines:
        m = re.fullmatch(r"民族[:：]?(\S{1,4})", ln.text)
        if m and m.group(1) in ethnicity.ETHNIC_GROUPS and ln.x0 > mm(24):
            out.values["ethnicity"] = m.group(1)
            out.quads["ethnicity"] = ln.quad
            return


# Below this recogniser confidence a number that fails its checksum is a misread worth
# repairing; above it, the card most likely carries that invalid number, and repairing it
# would hide a forged or mistyped card from valid_number.
REPAIR_BELOW_SCORE = 0.97


def _read_number(
    text: str, score: float, line: TextLine | None, read_number: NumberReader | None
) -> str:
    number = idnumber.normalise_number(text)
    if score >= REPAIR_BELOW_SCORE and len(number) == 18:
        return number
    repaired = idnumber.repair_number(text)
    if idnumber.valid_number(repaired) or read_number is None or line is None:
        return repaired
    # Read the line again as exactly 18 characters whose checksum, region and birth date
    # hold: the most probable such reading under the recogniser's own frame scores.
    return read_number(line) or repaired


def _value_column_x(rows: list[list[TextLine]]) -> float:
    """Where the values begin on this card: the median left edge of the rows that start
    near the layout's value column (an outline a millimetre off moves them all), or the
    layout's own figure."""
    near = sorted(r[0].x0 for r in rows if not r[0].label_merged
                  and abs(r[0].x0 - mm(FRONT_VALUE_X_MM)) < mm(3.0))
    return near[len(near) // 2] if near else mm(FRONT_VALUE_X_MM)


def _name_row(row: list[TextLine], start: float) -> list[TextLine]:
    """The pieces of the name row that hold the name; values begin at ``start``.

    Pieces ending left of where values begin are labels. So is a one-character piece
    ending before the middle of the name's first cell when another piece of the row
    starts at the value column: nothing is printed between the label column and that
    cell, so what the detector found there is the label's tail or the paper's pattern
    under glare (曲灿健 read as 二曲灿健). A piece reaching further holds the first
    character itself.
    """
    row = [ln for ln in row if ln.x1 > mm(FRONT_VALUE_X_MM - 2)]

    def stray(a: TextLine) -> bool:
        return (a.x1 < start + mm(1.0) and len(strip_label(a.text)) <= 1 and any(
            b is not a and b.x0 >= start - mm(1.0) and b.x0 > a.x1 - mm(0.5)
            for b in row))

    return [ln for ln in row if not stray(ln)]


def _clean_name(text: str) -> str:
    text = re.sub(r"\s+", "", text)
    # A name is Chinese characters (and the middle dot): digits or Latin letters at its
    # ends came from the background or the label.
    text = re.sub(r"^[^\u4e00-\u9fff]+|[^\u4e00-\u9fff]+$", "", text)
    # What a misread 姓名 label leaves in front of the name.
    if len(text) >= 3 and text[0] in "姓名":
        text = text[1:]
    # A middle dot between two Chinese characters is the transliterated-name separator;
    # the recogniser returns it as any of several dot-like characters.
    text = re.sub(
        r"(?<=[\u4e00-\u9fff])[" + re.escape(_MIDDLE_DOTS) + r"](?=[\u4e00-\u9fff])", "·", text
    )
    return text.strip(_MIDDLE_DOTS)


def _fill_from_number(out: CardFields) -> None:
    """Birth date and sex that could not be read are taken from a valid number."""
    number = out.values.get("number", "")
    if not number or not idnumber.valid_number(number):
        return
    if "birth" not in out.values:
        born = idnumber.birth_date(number)
        if born:
            out.values["birth"] = born.isoformat()
    if "sex" not in out.values:
        s = idnumber.sex(number)
        if s:
            out.values["sex"] = s


def parse_back(lines: list[TextLine], choose: LineChooser | None = None) -> CardFields:
    out = CardFields()
    validity = None
    for ln in lines:
        parsed = dates.parse_validity(strip_label(ln.text))
        if parsed and (validity is None or ln.cy > validity[0].cy):
            validity = (ln, parsed)
    if validity:
        ln, (start, end) = validity
        out.values["valid_from"], out.values["valid_to"] = start, end
        out.quads["valid_from"] = out.quads["valid_to"] = ln.quad
        if ln.label_merged:
            out.label_merged.update(("valid_from", "valid_to"))
        valid_y = ln.cy
    else:
        valid_y = mm(47)
    # The issuing authority: the row(s) between the title and the validity line.
    issue_lines = [
        ln for ln in lines
        if mm(30) < ln.cy < valid_y - mm(2.5) and strip_label(ln.text).strip()
        and ln.x1 > mm(31)
        and not is_back_title(ln.text)
    ]
    if issue_lines:
        rows = _rows(issue_lines)
        text = "".join(strip_label(ln.text) for r in rows for ln in r)
        # The authority's name is all Chinese; anything else came from the background.
        text = "".join(re.findall(r"[\u4e00-\u9fff]", text))
        out.values["issue"] = places.correct_issue(
            text, _tie_breaker([ln for r in rows for ln in r], choose)
        )
        out.quads["issue"] = _union_quad([ln for r in rows for ln in r])
        if rows[0][0].label_merged:
            out.label_merged.add("issue")
    return out
