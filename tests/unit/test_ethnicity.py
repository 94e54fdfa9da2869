import pytest

from worker.recognition import ethnicity
from worker.recognition.ethnicity import ETHNIC_GROUPS, match_ethnicity


def test_56_distinct_groups_without_zu() -> None:
    assert len(ETHNIC_GROUPS) == 56
    assert len(set(ETHNIC_GROUPS)) == 56
    assert not any(g.endswith("族") for g in ETHNIC_GROUPS)
    assert ETHNIC_GROUPS[0] == "汉" and ETHNIC_GROUPS[-1] == "基诺"


@pytest.mark.parametrize("group", ETHNIC_GROUPS)
def test_every_group_matches_itself_with_and_without_zu(group: str) -> None:
    assert match_ethnicity(group) == group
    assert match_ethnicity(group + "族") == group
    assert match_ethnicity(f"民族 {group}") == group


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 汉 ", "汉"),
        ("汉族", "汉"),
        ("民族汉", "汉"),
        ("民族：汉族", "汉"),
        ("土族", "土"),
        ("土家族", "土家"),
        ("维吾东", "维吾尔"),
        ("维吾尔族", "维吾尔"),
        ("维吾尓", "维吾尔"),
        ("哈萨", "哈萨克"),
        ("蒙占", "蒙古"),
        ("柯尔克汝", "柯尔克孜"),
        ("乌孜別克", "乌孜别克"),
        ("汉旅", "汉"),  # 族 misread
        # one-character groups only through the look-alike table
        ("汊", "汉"),
        ("汊族", "汉"),
        ("壯", "壮"),
        ("士", "土"),
        ("恕", "怒"),
        ("瑤", "瑶"),
        ("畬", "畲"),
    ],
)
def test_fuzzy_matches(text: str, expected: str) -> None:
    assert match_ethnicity(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "族",
        "民族",
        "口",  # not a look-alike of any one-character group
        "天",
        "土口",  # as close to 土 as to 土家: ambiguous
        "中华人民共和国",
        "ABC",
    ],
)
def test_nothing_close_gives_none(text: str) -> None:
    assert match_ethnicity(text) is None


def test_lookalike_table_targets_only_one_character_groups() -> None:
    for lookalike, group in ethnicity._SIMILAR.items():
        assert len(lookalike) == 1
        assert group in ETHNIC_GROUPS and len(group) == 1
        assert lookalike not in ETHNIC_GROUPS
    one_char = {g for g in ETHNIC_GROUPS if len(g) == 1}
    assert set(ethnicity._SIMILAR.values()) == one_char
