"""Border integrity by the card's print: the outline the recognised captions and titles
place in the photo (a turn, a scale and a shift), judged with the paper's hue when a
shadow darkens the card's edge."""

from __future__ import annotations

import pytest

from synthcard.alerts import make_alert_photo

FLAG = "detect_border_integrity"


@pytest.mark.parametrize(("seed", "strength", "side"), [
    # 2.5 mm off a corner of a card turned 7 degrees: outline read right, but the
    # paper by the frame is 30-40 L units darker than the card's middle (a shadow).
    (8100012, 0.0, "back"),
    # 2.5 mm off the right: the outline is read turned from the card, its right side
    # inside the frame; the print puts the card's right edge past it.
    (8100126, 0.0, "back"),
    # 20 mm off the right, the outline read around more than the card and turned.
    (8100059, 1.0, "front"),
    # 2.5 mm off the top of a card read turned 8.6 degrees in its card image: the
    # lines' leftmost x at their centre height put the captions up to 2 mm off and
    # held the fit level; the middles of their boxes' left sides place the card.
    (100372, 0.0, "front"),
    (8200017, 0.0, "back"),
])
def test_border_integrity_places_a_cut_off_card_by_its_print(run_engine, seed, strength,
                                                               side):
    case = make_alert_photo(seed, "border_integrity", strength, side)
    res = run_engine(case.image_bytes, flags={FLAG})["result"]
    assert res["detect_border_integrity_result"] is True, res["score_info"]


@pytest.mark.parametrize(("seed", "side"), [(8100140, "back"), (8100150, "front")])
def test_border_integrity_by_the_print_is_quiet_on_a_tight_crop(run_engine, seed, side):
    """A whole card cropped with 0.5-2 mm of background: the print places it inside
    (its captions and titles are read, so the card is placed by them too)."""
    case = make_alert_photo(seed, "tight", 0.0, side)
    res = run_engine(case.image_bytes, flags={FLAG})["result"]
    assert res["detect_border_integrity_result"] is False, res["score_info"]


def test_print_anchors_take_the_middle_of_a_turned_line_s_start():
    """A caption line turned 8 degrees: its anchor is the middle of its box's left side,
    not its leftmost x at its centre height (2 mm lower on a 30 mm line)."""
    import math

    import numpy as np

    from worker.recognition.alerts.base import anchor_pairs
    from worker.recognition.ocr import TextLine

    a = math.radians(8)
    d, n = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    start = np.array([170.0, 405.0])
    quad = np.array([start - 15 * n, start + 300 * d - 15 * n, start + 300 * d + 15 * n,
                     start + 15 * n], np.float32)
    lines = [TextLine(quad, "签发机关", 0.99)]
    src, dst = anchor_pairs(lines, "back", box_sides=True)
    assert src == [(170.0, 405.0)]
    assert np.allclose(dst[0], start, atol=0.5)
    # Without box_sides, the leftmost x at the centre height: well off the start.
    assert not np.allclose(anchor_pairs(lines, "back")[1][0], start, atol=0.5)


@pytest.mark.parametrize("seed", [8800007, 8800043, 8800071])
def test_border_integrity_keeps_the_read_outline_when_two_captions_disagree(run_engine,
                                                                            seed):
    """20 mm off the right of a back: the read outline ends at the frame and the paper
    runs on there, but the two captions read (签发机关, 有效期限; one box misplaced) fit
    a layout 5-12 mm off the read card, which threw the read outline away (score 0-5).
    Two anchors leave nothing to check their fit by, so the read outline still counts."""
    case = make_alert_photo(seed, "border_integrity", 1.0, "back")
    res = run_engine(case.image_bytes, flags={FLAG})["result"]
    assert res["detect_border_integrity_result"] is True, res["score_info"]


@pytest.mark.parametrize(("seed", "strength"), [(8800009, 1.0), (8800069, 1.0), (8800084, 2 / 3)])
def test_border_integrity_judges_a_cut_off_card_that_is_pale_where_read(run_engine, seed,
                                                                        strength):
    """14-20 mm off a front: read from what is left (without the portrait, or with
    background) the card's colour spread is 7.3-9.5, the copy alert's borderline (50-85),
    and the card was taken for a copy and not judged (score 0)."""
    case = make_alert_photo(seed, "border_integrity", strength, "front")
    res = run_engine(case.image_bytes, flags={FLAG})["result"]
    assert res["detect_border_integrity_result"] is True, res["score_info"]
