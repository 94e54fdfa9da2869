"""Correct place names in the address and the issuing authority with the region table.

Addresses start with province, city and county names, and the issuing authority is a
city or county public security bureau: all of them are in the administrative division
table we already ship for the ID number check. A name the recogniser got one character
wrong ('南宫具' for 南宫县) is put right when exactly one table name is that close.
Names of two characters are left alone: one slip there is half the name.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable

from worker.recognition import idnumber

_PLACEHOLDERS = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}
_MIN_LEN_TO_CORRECT = 3


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@functools.cache
def _tree() -> tuple[list[str], dict[str, list[str]]]:
    """Province names, and for each name the names one level below it."""
    table = idnumber._region_table()
    provinces: set[str] = set()
    children: dict[str, set[str]] = defaultdict(set)
    for code, name in table.items():
        if name in _PLACEHOLDERS:
            continue
        prov = table.get(code[:2] + "0000", "")
        if code.endswith("0000"):
            provinces.add(name)
            continue
        city = table.get(code[:4] + "00", "")
        if code.endswith("00"):
            children[prov].add(name)
        elif city and city not in _PLACEHOLDERS:
            children[city].add(name)
        else:
            children[prov].add(name)
    return sorted(provinces), {k: sorted(v) for k, v in children.items()}


# (what was read, the table names one slip away) -> the name the image shows, or None.
TieBreaker = Callable[[str, list[str]], "str | None"]


def _best_prefix(
    text: str,
    names: list[str],
    prefer: frozenset[str] = frozenset(),
    tie_breaker: TieBreaker | None = None,
) -> tuple[str, int] | None:
    """The one name that ``text`` starts with, allowing one slip (more in a long name of
    the number's own region); (name, chars used).

    A misread character (same length) beats a dropped or extra one; among equals, a
    name in ``prefer`` (the ID number's own region) wins; otherwise a tie is no answer.
    """
    exact = [n for n in names if text.startswith(n)]
    if exact:
        name = max(exact, key=len)
        return name, len(name)
    head = set(text[:16])
    # With the image to ask, two-character names are safe to correct too: the reading
    # itself stays a candidate, so a name that is not in the table is kept as read.
    min_len = 2 if tie_breaker is not None else _MIN_LEN_TO_CORRECT
    best: list[tuple[int, int, str, int]] = []
    for name in names:
        # The number's own region may be read with a slip per four characters (巍山彝族
        # 回族自治县 read as '山韩族回族自治县'); any other name with one.
        slips = max(1, len(name) // 4) if name in prefer else 1
        if len(name) < min_len or len(head.intersection(name)) < len(set(name)) - slips:
            continue
        for used in range(len(name) - slips, len(name) + slips + 1):
            if 0 < used <= len(text):
                d = edit_distance(text[:used], name)
                if d <= slips:
                    best.append((d, int(used != len(name)), name, used))
    if not best:
        return None
    best.sort()
    top = [b for b in best if b[:2] == best[0][:2]]
    names_at_best = {b[2] for b in top}
    # The number's own region is evidence enough to prefer its name to a closer one
    # ('什县' is 郫县 with one misread, but 什邡县, the number's county, with one dropped).
    preferred = [b for b in best if b[2] in prefer]
    if len({b[2] for b in preferred}) == 1:
        return preferred[0][2], preferred[0][3]
    if len(names_at_best) == 1 and len(top[0][2]) >= _MIN_LEN_TO_CORRECT:
        return top[0][2], top[0][3]
    if tie_breaker is None:
        return None
    used = top[0][3]
    # Every name that could be what the same characters were read from, whatever the
    # slip: a misread ('滦县') and a dropped first character (湄潭县 read as '潭县', the
    # blurred or dim start of a line) are for the image to tell apart.
    same_span = sorted({b[2] for b in best if b[3] == used})
    read = text[:used]
    # Short names keep the reading itself as a candidate: one slip in two characters
    # is as likely a name missing from the table as a misread one.
    options = same_span + ([read] if len(read) < _MIN_LEN_TO_CORRECT else [])
    chosen = tie_breaker(read, options)
    if chosen is None or chosen == read:
        return None
    return chosen, used


def correct_address(
    text: str, number: str = "", tie_breaker: TieBreaker | None = None
) -> str:
    """``text`` with its leading province/city/county names put right where one is clear.

    ``number`` (the card's ID number) breaks ties toward its own region's names;
    ``tie_breaker`` asks the image when the text alone cannot decide.
    """
    provinces, children = _tree()
    prefer = frozenset(n for n in idnumber.region_names(number) if n) if number else frozenset()
    # Every address starts with a province: characters before one are what is left of a
    # misread label or of the background ('佳址', '5.').
    for skip in range(1, 4):
        if any(text[skip:].startswith(p) for p in provinces) and not any(
            text.startswith(p) for p in provinces
        ):
            text = text[skip:]
            break
    out, rest = "", text
    level = provinces
    for _ in range(3):
        # An exact name from elsewhere in the table (a county-level city written right
        # after its province, 山东省青州市) is what the card says: nothing to correct.
        # Unless the number's own region is one slip away ('临县' for 临沭县).
        hit = _best_prefix(rest, level, prefer, tie_breaker)
        if hit is None or (hit[0] not in prefer and not any(rest.startswith(n) for n in level)
                           and _starts_with_known_name(rest)):
            break
        name, used = hit
        out, rest = out + name, rest[used:]
        level = children.get(name, [])
        if not level:
            break
    return out + rest


@functools.cache
def _all_names() -> list[str]:
    provinces, children = _tree()
    return sorted({n for names in children.values() for n in names} | set(provinces))


def _starts_with_known_name(text: str) -> bool:
    return any(text.startswith(n) for n in _names_by_first_char().get(text[:1], ()))


@functools.cache
def _names_by_first_char() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = defaultdict(list)
    for name in _all_names():
        if len(name) >= 2:
            index[name[0]].append(name)
    return {k: tuple(v) for k, v in index.items()}


_ISSUE_RE = re.compile(r"^(?P<place>.+?)公安局(?:(?P<branch>.+?)分局)?$")


def correct_issue(text: str, tie_breaker: TieBreaker | None = None) -> str:
    """'衡阳市公安局雁峰分局', 'XX县公安局': the bureau's place and its branch."""
    # Every authority ends in 局: a character or two after it came from the background.
    text = re.sub(r"(?<=局)[^局]{1,2}$", "", text)
    m = _ISSUE_RE.match(text)
    if not m:
        return text
    _provinces, children = _tree()
    place = m.group("place")
    hit = _best_prefix(place, _all_names(), tie_breaker=tie_breaker)
    if hit is None or hit[1] != len(place):
        return text
    name = hit[0]
    result = name + "公安局"
    branch = m.group("branch")
    if branch is not None:
        # A branch is named after a district without its suffix (雁峰区 → 雁峰分局).
        shorts = sorted({re.sub("[区县市]$", "", c) for c in children.get(name, [])})
        bhit = _best_prefix(branch, shorts, tie_breaker=tie_breaker)
        result += (bhit[0] if bhit and bhit[1] == len(branch) else branch) + "分局"
    return result
