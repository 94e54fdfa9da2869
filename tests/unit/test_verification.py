from datetime import date, datetime

import pytest

from worker.recognition.idnumber import check_digit
from worker.recognition.verification import (
    china_today,
    expected_period_years,
    side_verification,
    verification_result,
    verify_back,
    verify_front,
)

TODAY = date(2024, 6, 1)

MALE_1990 = "110105199003071239"  # 1990-03-07, 男
FEMALE_1985 = "320583198508150042"  # 1985-08-15, 女

FRONT_OK = {
    "name": "张三",
    "sex": "男",
    "ethnicity": "汉",
    "birth": "1990-03-07",
    "address": "北京市朝阳区XX街道XX号",
    "number": MALE_1990,
}
BACK_OK = {"issue": "北京市公安局朝阳分局", "valid_from": "2016-03-07", "valid_to": "2036-03-07"}


def _number(first17: str) -> str:
    return first17 + check_digit(first17)


def _back(valid_from: str, valid_to: str) -> dict[str, str]:
    return {"issue": "XX县公安局", "valid_from": valid_from, "valid_to": valid_to}


# ---------------------------------------------------------------- front


def test_front_all_true() -> None:
    assert verify_front(FRONT_OK, TODAY) == {
        "valid_number": True,
        "valid_birth": True,
        "valid_sex": True,
    }
    assert verify_front(
        {**FRONT_OK, "number": FEMALE_1985, "sex": "女", "birth": "1985-08-15"}, TODAY
    ) == {"valid_number": True, "valid_birth": True, "valid_sex": True}


def test_front_keys_in_document_order() -> None:
    assert list(verify_front(FRONT_OK, TODAY)) == ["valid_number", "valid_birth", "valid_sex"]


def test_front_birth_mismatch() -> None:
    vr = verify_front({**FRONT_OK, "birth": "1990-03-08"}, TODAY)
    assert vr == {"valid_number": True, "valid_birth": False, "valid_sex": True}


def test_front_birth_unreadable_or_malformed() -> None:
    assert not verify_front({**FRONT_OK, "birth": ""}, TODAY)["valid_birth"]
    assert not verify_front({**FRONT_OK, "birth": "1990年3月7日"}, TODAY)["valid_birth"]
    assert not verify_front({**FRONT_OK, "birth": "1990-02-30"}, TODAY)["valid_birth"]


def test_front_sex_mismatch() -> None:
    vr = verify_front({**FRONT_OK, "sex": "女"}, TODAY)
    assert vr == {"valid_number": True, "valid_birth": True, "valid_sex": False}
    assert not verify_front({**FRONT_OK, "sex": ""}, TODAY)["valid_sex"]


def test_front_invalid_number_forces_birth_and_sex_false() -> None:
    # Birth and sex agree with the number's digits, but the checksum is wrong: the
    # document says valid_birth / valid_sex default to false then.
    vr = verify_front({**FRONT_OK, "number": "110105199003071238"}, TODAY)
    assert vr == {"valid_number": False, "valid_birth": False, "valid_sex": False}


def test_front_unknown_region_is_invalid_number() -> None:
    vr = verify_front({**FRONT_OK, "number": _number("99999919900307123")}, TODAY)
    assert vr["valid_number"] is False


def test_front_birth_after_today_is_invalid_number() -> None:
    number = _number("11010520240602123")
    vr = verify_front({**FRONT_OK, "number": number, "birth": "2024-06-02"}, TODAY)
    assert vr == {"valid_number": False, "valid_birth": False, "valid_sex": False}


def test_front_lowercase_x_and_missing_fields() -> None:
    fields = {"number": "11010519491231002x", "sex": "女", "birth": "1949-12-31"}
    assert verify_front(fields, TODAY) == {
        "valid_number": True,
        "valid_birth": True,
        "valid_sex": True,
    }
    assert verify_front({}, TODAY) == {
        "valid_number": False,
        "valid_birth": False,
        "valid_sex": False,
    }
    assert verify_front(None, TODAY)["valid_number"] is False


# ---------------------------------------------------------------- back: valid_date


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "today", "expected"),
    [
        ("2016-03-07", "2036-03-07", TODAY, True),
        ("2016-03-07", "2036-03-07", date(2016, 3, 7), True),  # first day included
        ("2016-03-07", "2036-03-07", date(2036, 3, 7), True),  # last day included
        ("2016-03-07", "2036-03-07", date(2036, 3, 8), False),  # expired
        ("2016-03-07", "2036-03-07", date(2016, 3, 6), False),  # not yet valid
        ("2004-08-26", "2014-08-26", TODAY, False),  # long expired
        ("2010-01-01", "长期", TODAY, True),  # 长期 has no end
        ("2025-01-01", "长期", TODAY, False),  # 长期 but not started
        ("", "2036-03-07", TODAY, False),
        ("2016-03-07", "", TODAY, False),
        ("2016-03-07", "2036-13-07", TODAY, False),
        ("2016.03.07", "2036.03.07", TODAY, False),  # not the response format
        ("2036-03-07", "2016-03-07", TODAY, False),  # reversed
    ],
)
def test_valid_date(valid_from: str, valid_to: str, today: date, expected: bool) -> None:
    assert verify_back(_back(valid_from, valid_to), today)["valid_date"] is expected


def test_back_keys_in_document_order() -> None:
    assert list(verify_back(BACK_OK, TODAY)) == ["valid_date", "valid_validity_period"]


# ---------------------------------------------------------------- back: period


@pytest.mark.parametrize(
    ("age", "years"),
    [(0, 5), (15, 5), (16, 10), (25, 10), (26, 20), (45, 20), (46, None), (90, None)],
)
def test_expected_period_years(age: int, years: int | None) -> None:
    assert expected_period_years(age) == years


BIRTH = date(1990, 3, 7)


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "expected"),
    [
        # under 16 → 5 years
        ("2000-05-01", "2005-05-01", True),
        ("2000-05-01", "2010-05-01", False),
        # the day before the 16th birthday: still 15
        ("2006-03-06", "2011-03-06", True),
        ("2006-03-06", "2016-03-06", False),
        # exactly 16 on the day of issue → 10 years
        ("2006-03-07", "2016-03-07", True),
        ("2006-03-07", "2011-03-07", False),
        # 25 → 10 years; exactly 26 → 20 years
        ("2016-03-06", "2026-03-06", True),
        ("2016-03-06", "2036-03-06", False),
        ("2016-03-07", "2036-03-07", True),
        ("2016-03-07", "2026-03-07", False),
        # 45 → 20 years; exactly 46 → 长期
        ("2036-03-06", "2056-03-06", True),
        ("2036-03-06", "长期", False),
        ("2036-03-07", "长期", True),
        ("2036-03-07", "2056-03-07", False),
        # illegal lengths / shapes
        ("2016-03-07", "2031-03-07", False),  # 15 years
        ("2016-03-07", "2036-03-08", False),  # not the anniversary
        ("2016-03-07", "2016-03-07", False),  # zero length
        ("2036-03-07", "2016-03-07", False),  # reversed
        ("1989-01-01", "1994-01-01", False),  # issued before birth
        ("", "2036-03-07", False),
        ("2016-03-07", "", False),
        ("2016-03-07", "长", False),
    ],
)
def test_period_with_known_birth(valid_from: str, valid_to: str, expected: bool) -> None:
    vr = verify_back(_back(valid_from, valid_to), TODAY, BIRTH)
    assert vr["valid_validity_period"] is expected


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "expected"),
    [
        ("2016-03-07", "2021-03-07", True),
        ("2016-03-07", "2026-03-07", True),
        ("2016-03-07", "2036-03-07", True),
        ("2016-03-07", "长期", True),
        ("2016-03-07", "2031-03-07", False),  # 15 years is never legal
        ("2016-03-07", "2017-03-07", False),
        ("2016-03-07", "2046-03-07", False),
        ("2016-03-07", "2026-03-06", False),
        ("2016-03-07", "2026-04-07", False),
        ("", "长期", False),
    ],
)
def test_period_with_unknown_birth(valid_from: str, valid_to: str, expected: bool) -> None:
    vr = verify_back(_back(valid_from, valid_to), TODAY, None)
    assert vr["valid_validity_period"] is expected


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "expected"),
    [
        ("2008-02-29", "2013-02-28", True),  # no 29 Feb in 2013
        ("2008-02-29", "2013-03-01", True),
        ("2008-02-29", "2013-03-02", False),
        ("2008-02-29", "2018-02-28", True),
        ("2008-02-29", "2028-02-29", True),  # 2028 has a 29 Feb
        ("2008-02-29", "2028-02-28", False),
        ("2008-02-29", "2028-03-01", False),
        ("2009-02-28", "2014-02-28", True),
        ("2009-03-01", "2014-02-28", False),
    ],
)
def test_period_leap_day_issue(valid_from: str, valid_to: str, expected: bool) -> None:
    vr = verify_back(_back(valid_from, valid_to), TODAY, None)
    assert vr["valid_validity_period"] is expected


def test_period_holder_born_on_leap_day() -> None:
    born = date(1988, 2, 29)
    # 2004 is a leap year: 16 on 29 Feb 2004, 15 the day before.
    assert verify_back(_back("2004-02-28", "2009-02-28"), TODAY, born)["valid_validity_period"]
    assert verify_back(_back("2004-02-29", "2014-02-28"), TODAY, born)["valid_validity_period"]
    # 2014 is a common year: still 25 on 28 Feb, 26 from 1 March.
    assert verify_back(_back("2014-02-28", "2024-02-28"), TODAY, born)["valid_validity_period"]
    assert verify_back(_back("2014-03-01", "2034-03-01"), TODAY, born)["valid_validity_period"]
    assert not verify_back(_back("2014-02-28", "2034-02-28"), TODAY, born)["valid_validity_period"]


def test_expired_card_keeps_a_valid_period() -> None:
    vr = verify_back(_back("2006-08-30", "2016-08-30"), TODAY, None)
    assert vr == {"valid_date": False, "valid_validity_period": True}


# ---------------------------------------------------------------- entry point


def test_single_front_has_five_keys_with_back_defaults_false() -> None:
    vr = verification_result("front", FRONT_OK, None, TODAY)
    assert vr == {
        "valid_number": True,
        "valid_birth": True,
        "valid_sex": True,
        "valid_date": False,
        "valid_validity_period": False,
    }
    assert list(vr) == [
        "valid_number",
        "valid_birth",
        "valid_sex",
        "valid_date",
        "valid_validity_period",
    ]


def test_single_back_has_five_keys_with_front_defaults_false() -> None:
    vr = verification_result("back", None, BACK_OK, TODAY)
    assert vr == {
        "valid_number": False,
        "valid_birth": False,
        "valid_sex": False,
        "valid_date": True,
        "valid_validity_period": True,
    }
    assert list(vr)[:3] == ["valid_number", "valid_birth", "valid_sex"]


def test_single_back_ignores_front_fields() -> None:
    # Even if the engine passes them, single-back front keys stay at their defaults.
    vr = verification_result("back", FRONT_OK, BACK_OK, TODAY)
    assert vr["valid_number"] is False


def test_single_front_not_readable_gives_all_false() -> None:
    vr = verification_result("front", {}, None, TODAY)
    assert vr == dict.fromkeys(
        ["valid_number", "valid_birth", "valid_sex", "valid_date", "valid_validity_period"],
        False,
    )


def test_double_side_splits_keys() -> None:
    front_vr, back_vr = verification_result("double_side", FRONT_OK, BACK_OK, TODAY)
    assert front_vr == {"valid_number": True, "valid_birth": True, "valid_sex": True}
    assert back_vr == {"valid_date": True, "valid_validity_period": True}


def test_double_side_uses_holder_age_from_front() -> None:
    # Issued on the 16th birthday with a 5-year period: fine for a lone back side (age
    # unknown), wrong once the front tells us the holder's birth date.
    back = _back("2006-03-07", "2011-03-07")
    assert verification_result("back", None, back, TODAY)["valid_validity_period"] is True
    _, back_vr = verification_result("double_side", FRONT_OK, back, TODAY)
    assert back_vr == {"valid_date": False, "valid_validity_period": False}


def test_double_side_invalid_number_falls_back_to_printed_birth() -> None:
    front = {**FRONT_OK, "number": "110105199003071238"}  # bad checksum
    back = _back("2006-03-07", "2011-03-07")
    front_vr, back_vr = verification_result("double_side", front, back, TODAY)
    assert front_vr == {"valid_number": False, "valid_birth": False, "valid_sex": False}
    assert back_vr is not None and back_vr["valid_validity_period"] is False  # age 16
    # Neither a valid number nor a printed birth: any legal period passes.
    front = {**front, "birth": ""}
    _, back_vr = verification_result("double_side", front, back, TODAY)
    assert back_vr is not None and back_vr["valid_validity_period"] is True


def test_double_side_missing_side_gives_none() -> None:
    assert verification_result("double_side", FRONT_OK, {}, TODAY) == (
        {"valid_number": True, "valid_birth": True, "valid_sex": True},
        None,
    )
    assert verification_result("double_side", None, BACK_OK, TODAY) == (
        None,
        {"valid_date": True, "valid_validity_period": True},
    )
    assert verification_result("double_side", None, None, TODAY) == (None, None)


def test_today_may_be_datetime_or_omitted() -> None:
    vr = verification_result("back", None, BACK_OK, datetime(2024, 6, 1, 23, 59))
    assert vr["valid_date"] is True
    assert isinstance(verification_result("front", FRONT_OK, None), dict)
    assert isinstance(china_today(), date)


def test_unknown_side_is_an_error() -> None:
    with pytest.raises(ValueError):
        verification_result("", FRONT_OK, None, TODAY)


# ---------------------------------------------------------------- per-side helper


def test_side_verification_matches_verification_result() -> None:
    assert side_verification("front", FRONT_OK, TODAY) == verification_result(
        "front", FRONT_OK, None, TODAY
    )
    assert side_verification("back", BACK_OK, TODAY) == verification_result(
        "back", None, BACK_OK, TODAY
    )
    assert (
        side_verification("front", FRONT_OK, TODAY, double_side=True),
        side_verification("back", BACK_OK, TODAY, double_side=True, front_fields=FRONT_OK),
    ) == verification_result("double_side", FRONT_OK, BACK_OK, TODAY)


def test_side_verification_double_back_needs_front_for_age() -> None:
    back = _back("2006-03-07", "2011-03-07")  # 5 years at age 16
    assert side_verification("back", back, TODAY, double_side=True) == {
        "valid_date": False,
        "valid_validity_period": True,
    }
    assert side_verification("back", back, TODAY, double_side=True, front_fields=FRONT_OK) == {
        "valid_date": False,
        "valid_validity_period": False,
    }
    # Single back side never takes the age from elsewhere.
    assert side_verification("back", back, TODAY, front_fields=FRONT_OK)["valid_validity_period"]


def test_side_verification_rejects_double_side_name() -> None:
    with pytest.raises(ValueError):
        side_verification("double_side", FRONT_OK, TODAY)
