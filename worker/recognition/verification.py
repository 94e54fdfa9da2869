"""The ``verification_result`` block (document tables 6, 8 and 10).

Which keys appear, and their defaults, depend on what was recognised:

* single front side (``side=front``, or auto-detected front): all five keys —
  ``valid_number``, ``valid_birth``, ``valid_sex`` computed, ``valid_date`` and
  ``valid_validity_period`` fixed to ``False`` ("当识别结果为单页，身份证图片是人像面时，
  默认是false").
* single back side: all five keys — ``valid_date`` and ``valid_validity_period``
  computed, ``valid_number``, ``valid_birth``, ``valid_sex`` fixed to ``False``
  ("当识别结果为单页，身份证图片是国徽面时，默认是false").
* ``side=double_side``: ``result.front.verification_result`` has only the three front
  keys and ``result.back.verification_result`` only the two back keys ("该字段仅在
  front/back 字典中存在"); a side that was not found has an empty dict and so no
  verification block at all.

Table 5 says the single-side block "包含valid_number、valid_birth、valid_sex、
valid_validity_period和valid_date"; the document's two single-side examples omit
``valid_validity_period`` (an older example), so we follow the table and always send five.

Call :func:`verification_result` (all sides at once) or :func:`side_verification` (one
side's dict at a time) from the engine; the other functions are their parts.
Input field values are the response's own strings (``birth`` / ``valid_from`` /
``valid_to`` as ``YYYY-MM-DD`` or ``长期``, ``sex`` ``男``/``女``, ``""`` when unknown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone

from worker.recognition import idnumber
from worker.recognition.dates import LONG_TERM, VALIDITY_YEARS

__all__ = [
    "BACK_KEYS",
    "FRONT_KEYS",
    "china_today",
    "expected_period_years",
    "holder_birth",
    "side_verification",
    "verification_result",
    "verify_back",
    "verify_front",
]

FRONT_KEYS = ("valid_number", "valid_birth", "valid_sex")
BACK_KEYS = ("valid_date", "valid_validity_period")
# Periods a resident ID card can have, in years; None is 长期.
_LEGAL_PERIODS: tuple[int | None, ...] = (*VALIDITY_YEARS, None)

# China has one time zone and no DST since 1991: a fixed UTC+8 needs no tz database.
_CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def china_today() -> date:
    """Today's date in China, which is what "today" means for the card's dates."""
    return datetime.now(_CHINA_TZ).date()


def _as_date(value: date) -> date:
    # datetime is a subclass of date but does not compare with one.
    return value.date() if isinstance(value, datetime) else value


def _parse_iso(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    m = _ISO_DATE.fullmatch(value.strip())
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _text(fields: Mapping[str, object] | None, key: str) -> str:
    value = (fields or {}).get(key, "")
    return value.strip() if isinstance(value, str) else ""


# ---------------------------------------------------------------------------
# front
# ---------------------------------------------------------------------------


def verify_front(fields: Mapping[str, object] | None, today: date) -> dict[str, bool]:
    """The three front checks, keys in document order.

    * ``valid_number``: :func:`idnumber.valid_number` (18 chars, checksum, known region
      code, real birth date from 1880 up to ``today``).
    * ``valid_birth``: the printed ``birth`` equals the number's birth date; ``False``
      whenever ``valid_number`` is ``False`` (document default).
    * ``valid_sex``: the printed ``sex`` equals the number's (odd 17th digit 男, even 女);
      ``False`` whenever ``valid_number`` is ``False``.
    """
    today = _as_date(today)
    number = _text(fields, "number")
    ok_number = idnumber.valid_number(number, today)
    printed_birth = _parse_iso(_text(fields, "birth"))
    ok_birth = (
        ok_number and printed_birth is not None and printed_birth == idnumber.birth_date(number)
    )
    ok_sex = ok_number and _text(fields, "sex") == idnumber.sex(number)
    return {"valid_number": ok_number, "valid_birth": ok_birth, "valid_sex": ok_sex}


def holder_birth(front_fields: Mapping[str, object] | None, today: date) -> date | None:
    """Best-known birth date of the holder from the front side, for the back's period
    check: the number's date when the number is valid, else the printed birth."""
    number = _text(front_fields, "number")
    if idnumber.valid_number(number, _as_date(today)):
        return idnumber.birth_date(number)
    return _parse_iso(_text(front_fields, "birth"))


# ---------------------------------------------------------------------------
# back
# ---------------------------------------------------------------------------


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _same_day_years_later(start: date, end: date) -> int | None:
    """``end.year - start.year`` if ``end`` is the anniversary of ``start``, else None.

    A card issued on 29 February ends on 28 February or 1 March when the end year has
    no 29 February (issuing offices differ), and on 29 February when it has one.
    """
    years = end.year - start.year
    if years <= 0:
        return None
    if (start.month, start.day) == (end.month, end.day):
        return years
    if (start.month, start.day) == (2, 29) and not _is_leap(end.year):
        if (end.month, end.day) in ((2, 28), (3, 1)):
            return years
    return None


def _age_on(birth: date, day: date) -> int:
    """Completed years (周岁) on ``day``; someone born on 29 February turns a year
    older on 1 March in common years."""
    years = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        years -= 1
    return years


def expected_period_years(age_at_issue: int) -> int | None:
    """Legal period for an age at issue (居民身份证法 第五条): under 16 → 5 years,
    16-25 → 10, 26-45 → 20, 46 and over → None (长期)."""
    if age_at_issue < 16:
        return 5
    if age_at_issue <= 25:
        return 10
    if age_at_issue <= 45:
        return 20
    return None


def _period(valid_from: date, valid_to_text: str) -> tuple[bool, int | None]:
    """(ok, years) for the printed period; years None means 长期."""
    if valid_to_text == LONG_TERM:
        return True, None
    valid_to = _parse_iso(valid_to_text)
    if valid_to is None:
        return False, None
    years = _same_day_years_later(valid_from, valid_to)
    return years is not None, years


def verify_back(
    fields: Mapping[str, object] | None, today: date, birth: date | None = None
) -> dict[str, bool]:
    """The two back checks, keys in document order.

    * ``valid_date``: ``valid_from <= today <= valid_to`` (both ends inclusive; 长期 has
      no end). False when a date is unreadable.
    * ``valid_validity_period``: ``valid_to`` is the anniversary of ``valid_from`` (29 Feb
      may end on 28 Feb / 1 Mar) after a legal number of years for the holder's age at
      ``valid_from``: under 16 → 5, 16-25 → 10, 26-45 → 20, 46 and over → 长期. With
      ``birth`` unknown (a single back side) any legal period (5, 10, 20 years or 长期)
      passes. Issue before birth is never valid.
    """
    today = _as_date(today)
    valid_from = _parse_iso(_text(fields, "valid_from"))
    valid_to_text = _text(fields, "valid_to")

    ok_date = False
    if valid_from is not None and valid_from <= today:
        if valid_to_text == LONG_TERM:
            ok_date = True
        else:
            valid_to = _parse_iso(valid_to_text)
            ok_date = valid_to is not None and valid_from <= valid_to and today <= valid_to

    ok_period = False
    if valid_from is not None:
        shape_ok, years = _period(valid_from, valid_to_text)
        if shape_ok and years in _LEGAL_PERIODS:
            if birth is None:
                ok_period = True
            elif birth <= valid_from:
                ok_period = years == expected_period_years(_age_on(birth, valid_from))
    return {"valid_date": ok_date, "valid_validity_period": ok_period}


# ---------------------------------------------------------------------------
# entry point for the engine
# ---------------------------------------------------------------------------


def side_verification(
    side_name: str,
    fields: Mapping[str, object] | None,
    today: date | None = None,
    *,
    double_side: bool = False,
    front_fields: Mapping[str, object] | None = None,
) -> dict[str, bool]:
    """``verification_result`` for one side's dict, for engines that build each side
    separately. ``side_name`` is the recognised side, ``"front"`` or ``"back"``.

    * ``double_side=False`` (single side): five keys, the other side's keys ``False``.
    * ``double_side=True``: only this side's keys (three for front, two for back). For
      the back, pass the front's fields as ``front_fields`` so that the period is
      checked against the holder's age (without them any legal period passes).
    """
    today = _as_date(today) if today is not None else china_today()
    if side_name == "front":
        vr = verify_front(fields, today)
        return vr if double_side else {**vr, **dict.fromkeys(BACK_KEYS, False)}
    if side_name == "back":
        birth = holder_birth(front_fields, today) if double_side and front_fields else None
        vr = verify_back(fields, today, birth)
        return vr if double_side else {**dict.fromkeys(FRONT_KEYS, False), **vr}
    raise ValueError(f"side_name must be 'front' or 'back', not {side_name!r}")


def verification_result(
    side: str,
    front_fields: Mapping[str, object] | None,
    back_fields: Mapping[str, object] | None,
    today: date | None = None,
) -> dict[str, bool] | tuple[dict[str, bool] | None, dict[str, bool] | None]:
    """What to put in ``verification_result`` (only when ``return_verification`` is true).

    ``side`` is the side that was recognised (after automatic detection), not the raw
    request value: ``"front"``, ``"back"`` or ``"double_side"``. ``today`` defaults to
    :func:`china_today`.

    * ``"front"``: pass the front fields; returns one dict with five keys
      ``valid_number, valid_birth, valid_sex`` (computed) and
      ``valid_date=False, valid_validity_period=False`` (document defaults).
      Put it at ``result.verification_result``.
    * ``"back"``: pass the back fields; returns one dict with five keys
      ``valid_number=False, valid_birth=False, valid_sex=False`` (defaults) and
      ``valid_date, valid_validity_period`` (computed; the holder's age is unknown, so
      any legal period length passes). Put it at ``result.verification_result``.
    * ``"double_side"``: pass both; returns ``(front_vr, back_vr)`` for
      ``result.front.verification_result`` (three front keys) and
      ``result.back.verification_result`` (two back keys). A side whose fields are
      ``None`` or ``{}`` (not found) gives ``None``: leave that side's dict empty. The
      back's period is checked against the holder's age taken from the front (the
      number's birth date if the number is valid, else the printed birth).
    """
    today = _as_date(today) if today is not None else china_today()  # one date for both
    if side in ("front", "back"):
        fields = front_fields if side == "front" else back_fields
        return side_verification(side, fields, today)
    if side == "double_side":
        front_vr = (
            side_verification("front", front_fields, today, double_side=True)
            if front_fields
            else None
        )
        back_vr = (
            side_verification(
                "back", back_fields, today, double_side=True, front_fields=front_fields
            )
            if back_fields
            else None
        )
        return front_vr, back_vr
    raise ValueError(f"side must be 'front', 'back' or 'double_side', not {side!r}")
