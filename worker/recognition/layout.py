"""Where things are on a resident ID card (GB/T 16...; measured on the real layout).

All positions are millimetres from the card's top-left corner, with the card upright.
The engine rectifies every card to ``CARD_W_PX × CARD_H_PX`` and converts with
:func:`mm`. Only coarse facts are used (rows, the portrait box), so small differences
between print runs do not matter.
"""

from __future__ import annotations

CARD_W_MM = 85.6
CARD_H_MM = 54.0
ASPECT = CARD_W_MM / CARD_H_MM  # 1.585

# Rectified card resolution: 10 px per mm makes the smallest printed text ~26 px tall,
# enough for the recogniser (48 px input) without wasting detector time.
PX_PER_MM = 10.0
CARD_W_PX = int(round(CARD_W_MM * PX_PER_MM))
CARD_H_PX = int(round(CARD_H_MM * PX_PER_MM))


def mm(value: float) -> float:
    return value * PX_PER_MM


# Front (人像面): the value column starts right of the labels; the portrait is on the right.
FRONT_VALUE_X_MM = 16.5
FRONT_PORTRAIT_MM = (55.0, 6.0, 80.5, 38.0)  # x0, y0, x1, y1
# Text right of this x (and above the number row) belongs to the portrait area.
FRONT_TEXT_MAX_X_MM = 54.0
FRONT_NUMBER_ROW_Y_MM = 46.5
# Name, sex and birth rows are this far apart (10.5, 17 and 23.5 mm from the top).
FRONT_ROW_PITCH_MM = 6.5
FRONT_NAME_ROW_Y_MM = 10.5
FRONT_BIRTH_ROW_Y_MM = 23.5

# Back (国徽面)
BACK_EMBLEM_MM = (5.0, 4.0, 21.0, 20.0)

FRONT_LABELS = ("姓名", "性别", "民族", "出生", "住址", "公民身份号码")
BACK_LABELS = ("签发机关", "有效期限")
BACK_TITLES = ("中华人民共和国", "居民身份证")
# Where the back's titles are centred (mm): one above the other, 10 mm apart.
BACK_TITLE_CENTRES_MM = {"中华人民共和国": (53.0, 11.0), "居民身份证": (53.0, 21.0)}
# Pieces of the titles a partial read still shows; no issuing authority contains them.
BACK_TITLE_FRAGMENTS = ("共和国", "中华人民", "身份证", "居民身")
# The titles' print is larger than the fields' (about 5 and 9 mm against 3.5 mm).
TITLE_MAX_HEIGHT_MM = 12.0
FIELD_MAX_HEIGHT_MM = 6.5


def is_back_title(text: str) -> bool:
    return any(f in text for f in BACK_TITLE_FRAGMENTS)
