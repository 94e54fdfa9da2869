"""Regenerate the committed sample photos: obviously fictional people on synthetic cards.

    python samples/make_samples.py

The names say 示例 (example) and the streets do not exist; the numbers are valid only
in form (checksum, region 110101, birth date), as every synthetic card's are.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import cv2
import numpy as np

from synthcard import Identity, photograph, render_back, render_front
from synthcard.identity import check_digit

HERE = Path(__file__).resolve().parent


def _identity(name: str, sex_digit: str, birth: date, issued: date, years: int) -> Identity:
    first17 = "110101" + birth.strftime("%Y%m%d") + "00" + sex_digit
    return Identity(
        name=name,
        sex="男" if int(sex_digit) % 2 else "女",
        ethnicity="汉",
        birth=birth,
        address="北京市东城区示例路1号样例小区2号楼3单元401室",
        number=first17 + check_digit(first17),
        issue="北京市公安局东城分局",
        valid_from=issued,
        valid_to=issued.replace(year=issued.year + years),
    )


def main() -> None:
    person = _identity("张示例", "1", date(1990, 3, 6), date(2020, 8, 26), 20)
    rng = np.random.default_rng(20261130)
    front = render_front(person, rng)
    back = render_back(person, rng)
    shots = {
        "front.jpg": photograph([front], rng, rotation=-6.0, background="texture",
                                jpeg_quality=90, out_size=1400),
        "back.jpg": photograph([back], rng, rotation=4.0, background="plain",
                               jpeg_quality=90, out_size=1400),
        "double_side.jpg": photograph([front, back], rng, rotation=3.0,
                                      background="plain", jpeg_quality=90, out_size=1600),
    }
    for name, photo in shots.items():
        cv2.imwrite(str(HERE / name), photo.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(name, photo.image.shape)


if __name__ == "__main__":
    main()
