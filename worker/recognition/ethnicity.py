"""The 56 officially recognised ethnic groups and fuzzy matching of the OCR'd field.

The card prints the group without 族 (民族 汉); the API answers it the same way.
"""

from __future__ import annotations

import re

__all__ = ["ETHNIC_GROUPS", "match_ethnicity"]

# Order of the national standard GB 3304 (codes 01-56).
# fmt: off
ETHNIC_GROUPS: tuple[str, ...] = (
    "汉", "蒙古", "回", "藏", "维吾尔", "苗", "彝", "壮", "布依", "朝鲜",
    "满", "侗", "瑶", "白", "土家", "哈尼", "哈萨克", "傣", "黎", "傈僳",
    "佤", "畲", "高山", "拉祜", "水", "东乡", "纳西", "景颇", "柯尔克孜", "土",
    "达斡尔", "仫佬", "羌", "布朗", "撒拉", "毛南", "仡佬", "锡伯", "阿昌", "普米",
    "塔吉克", "怒", "乌孜别克", "俄罗斯", "鄂温克", "德昂", "保安", "裕固", "京", "塔塔尔",
    "独龙", "鄂伦春", "赫哲", "门巴", "珞巴", "基诺",
)
# fmt: on
assert len(ETHNIC_GROUPS) == 56 and len(set(ETHNIC_GROUPS)) == 56

_GROUP_SET = frozenset(ETHNIC_GROUPS)

# Characters an OCR engine plausibly returns instead of a one-character group name
# (shared components, traditional/variant forms). A single character can only be
# matched through this table: edit distance says nothing about one character.
_SIMILAR: dict[str, str] = {}
for _group, _lookalikes in {
    "汉": "汊叹仅权汶漢",
    "回": "囬囘冋田",
    "藏": "臧葳蔵",
    "苗": "茁笛亩",
    "彝": "彜彞",
    "壮": "壯状妆",
    "满": "滿瞒螨",
    "侗": "洞桐恫峒",
    "瑶": "瑤谣摇遥徭",
    "白": "臼自百",
    "傣": "泰俸",
    "黎": "黍梨犁藜",
    "佤": "瓦伍低",
    "畲": "畬佘畜余",
    "水": "氷永氺",
    "土": "士工上",
    "羌": "羗差姜",
    "怒": "恕努奴弩",
    "京": "亰凉惊",
}.items():
    for _ch in _lookalikes:
        assert _ch not in _SIMILAR, _ch
        _SIMILAR[_ch] = _group
del _group, _lookalikes, _ch

_NON_CJK = re.compile(r"[^\u3400-\u9fff]")
_LABEL = "民族"

# A candidate is accepted when its (confusion-weighted) edit cost is at most this share
# of the longer string: one slip in two characters, or in three ('维吾东' → '维吾尔').
_MAX_RELATIVE_COST = 0.5


def _sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    # A known look-alike is a cheaper mistake than an arbitrary character.
    return 0.5 if _SIMILAR.get(a) == b or _SIMILAR.get(b) == a else 1.0


def _edit_cost(a: str, b: str) -> float:
    prev = [float(j) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        cur = [float(i)]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + _sub_cost(ca, cb)))
        prev = cur
    return prev[-1]


def _clean(text: str) -> str:
    text = _NON_CJK.sub("", text)  # spaces, colons, stray Latin letters
    if text.startswith(_LABEL):
        text = text[len(_LABEL) :]
    if len(text) > 1 and text.endswith("族"):
        text = text[:-1]
    return text


# Characters of group names that the recogniser reads poorly, with what it reads them
# as. PP-OCRv4 had no 仫 at all (it came out as 么, its right half, or 俬); PP-OCRv6 has
# it but still reads a blurred 仫 as those now and then.
ETHNIC_LOOKALIKES = {
    "仫": "么俬私",
    "仡": "亿乞忆屹",
}


def match_ethnicity(text: str) -> str | None:
    """The ethnic group named by an OCR'd field, without 族, or None.

    Strips whitespace, punctuation, a leading 民族 label and a trailing 族. An exact name
    wins; one character is matched only through a table of look-alikes ('汊' → '汉');
    longer text goes to the group with the smallest edit cost relative to length, if
    that is at most one slip per two characters and no other group is as close
    ('维吾东' → '维吾尔'). Returns None when nothing is close or the best is tied.
    """
    cleaned = _clean(text)
    if not cleaned:
        return None
    if cleaned in _GROUP_SET:
        return cleaned
    # A multi-character name whose tail the detector cut off ('拉' for 拉祜): accept a
    # prefix that only one group starts with.
    starts = [g for g in ETHNIC_GROUPS if len(g) > len(cleaned) and g.startswith(cleaned)]
    if len(starts) == 1 and cleaned not in _SIMILAR:
        return starts[0]
    if len(cleaned) == 1:
        return _SIMILAR.get(cleaned)
    scored = sorted((_edit_cost(cleaned, g) / max(len(cleaned), len(g)), g) for g in ETHNIC_GROUPS)
    (best_score, best), (second_score, _) = scored[0], scored[1]
    if best_score <= _MAX_RELATIVE_COST and best_score < second_score:
        return best
    return None
