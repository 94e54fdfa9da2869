"""Tampering's typesetting evidence and glare's specular spot.

Contexts are built from generated photos and their known geometry (no OCR), as in
``test_alerts.py``.
"""

from __future__ import annotations

import numpy as np

from synthcard.alerts import make_alert_photo
from worker.recognition import imageio
from worker.recognition.alerts import DEFAULT_THRESHOLDS, REGISTRY, AlertContext
from worker.recognition.alerts.tampering import typeset_shortfall
from worker.recognition.layout import PX_PER_MM
from worker.recognition.ocr import TextLine
from worker.recognition.reader import CardRead
from worker.recognition.rectify import rectify_card


def _line(text: str, x0_mm: float, x1_mm: float, cy_mm: float, h_mm: float = 4.0,
          merged: bool = False, stretch: float = 1.0) -> TextLine:
    x0, x1 = x0_mm * stretch * PX_PER_MM, x1_mm * stretch * PX_PER_MM
    y0, y1 = (cy_mm - h_mm / 2) * PX_PER_MM, (cy_mm + h_mm / 2) * PX_PER_MM
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    return TextLine(quad, text, 0.99, merged)


def _front(number_end_mm: float = 77.4, birth_end_mm: float = 45.9,
           stretch: float = 1.0) -> list[TextLine]:
    """A front read the way the reader gives it: captions merged with their values (the
    box starting at the value cut), the number on its own."""
    return [
        _line("姓名王小明", 15.0, 27.0, 10.5, merged=True, stretch=stretch),
        _line("性别男", 15.0, 19.5, 17.0, merged=True, stretch=stretch),
        _line("出生1990年1月12日", 15.0, birth_end_mm, 23.5, merged=True, stretch=stretch),
        _line("住址河北省石家庄市鹿泉市南", 15.0, 50.3, 30.0, merged=True, stretch=stretch),
        _line("公民身份号码", 6.5, 23.5, 46.5, stretch=stretch),
        _line("130185199001120000", 29.6, number_end_mm, 46.5, stretch=stretch),
    ]


def test_a_field_set_in_an_editors_font_falls_short_of_the_cards_typesetting():
    """The number typed again in a word processor's font: its 18 digits span 32 mm, not
    the card's 48; the birth date packed, its 日 ending at 34 mm instead of 46."""
    assert typeset_shortfall(_front(), "front") < 0.05
    assert typeset_shortfall(_front(number_end_mm=62.0), "front") > 0.25
    assert typeset_shortfall(_front(birth_end_mm=34.0), "front") > 0.25


def test_a_card_read_stretched_is_out_of_step_nowhere():
    """A card read from a rough outline is stretched everywhere alike (the captions'
    cut does not move with it): each field is judged against the rest of the card."""
    assert typeset_shortfall(_front(stretch=1.3), "front") < 0.05
    # ... while the one field that keeps the layout's span on such a card is the odd one.
    lines = _front(stretch=1.3)
    lines[-1] = _line("130185199001120000", 29.6 * 1.3, 62.0 * 1.3, 46.5)
    assert typeset_shortfall(lines, "front") > 0.25


def _rectified(case):
    """The photo of ``case``, its true corners, and the card rectified by them."""
    image = imageio.load_image(case.image_bytes)
    corners = np.asarray(case.quads[0], np.float32)
    card, m = rectify_card(image.bgr, corners)
    return image, corners, card, m


def _context(case, lines: list[TextLine], side: str | None = None) -> AlertContext:
    image, corners, card, m = _rectified(case)
    return AlertContext(image, CardRead(corners=corners, photo_to_card=m, card=card,
                                        lines=lines, side=side or case.side))


def _truth_lines(case, m: np.ndarray, number_end_share: float = 1.0) -> list[TextLine]:
    """The generator's field boxes as the reader's lines (captions left out); the
    number's right end pulled in to ``number_end_share`` of its span."""
    import cv2

    lines = []
    for name in ("name", "birth", "number"):
        pts = cv2.perspectiveTransform(
            np.asarray(case.text_locations[name], np.float32).reshape(-1, 1, 2), m).reshape(4, 2)
        if name == "number":
            x0 = pts[:, 0].min()
            pts[:, 0] = x0 + (pts[:, 0] - x0) * number_end_share
        text = case.expected[name]
        if name == "birth":
            y, mo, d = (int(v) for v in text.split("-"))
            text = f"{y}年{mo}月{d}日"
        lines.append(TextLine(pts.astype(np.float32), text, 0.99))
    return lines


def test_tampering_raises_on_a_field_out_of_the_cards_typesetting():
    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)

    def score(share: float) -> int:
        read = CardRead(corners=corners, photo_to_card=m, card=card,
                        lines=_truth_lines(case, m, share), side="front")
        return REGISTRY["tampering"].score(AlertContext(image, read))

    assert score(1.0) < DEFAULT_THRESHOLDS["tampering"]
    assert score(0.65) >= DEFAULT_THRESHOLDS["tampering"]


def test_tampering_does_not_judge_the_typesetting_of_a_card_cut_off():
    """A card cut off by the frame, read from what is left of it: its lines end at the
    frame, short of the layout, and that is border integrity's business."""
    case = make_alert_photo(9, "border_integrity", 1.0, "front")
    image, corners, card, m = _rectified(case)
    read = CardRead(corners=corners, photo_to_card=m, card=card,
                    lines=_truth_lines(case, m, 0.65), side="front")
    ctx = AlertContext(image, read)
    assert ctx.cut_off
    assert REGISTRY["tampering"].score(ctx) < DEFAULT_THRESHOLDS["tampering"]


def _birth_patched(case, m: np.ndarray, card: np.ndarray,
                   text: str) -> tuple[np.ndarray, list[TextLine]]:
    """The card with the paper past 60 % of the birth date's span painted white (a
    patch of the paper's colour on an over-exposed card), and the lines read with the
    birth date ending there, read as ``text``."""
    lines = _truth_lines(case, m)
    birth = lines[1]
    q = birth.quad.copy()
    x0, x1 = float(q[:, 0].min()), float(q[:, 0].max())
    cut = x0 + 0.6 * (x1 - x0)
    q[:, 0] = np.minimum(q[:, 0], cut)
    lines[1] = TextLine(q, text, 0.99)
    painted = card.copy()
    painted[int(21.0 * PX_PER_MM):int(27.5 * PX_PER_MM), int(cut) + 5:int(49 * PX_PER_MM)] = 255
    return painted, lines


def test_glare_does_not_count_the_paper_past_a_whole_field_set_short():
    """A re-typed birth date in a smaller font, its patch white on a bright card: the
    cells past its end are empty and as light as the paper. The date was read whole,
    so the layout ends it there: that is the typesetting's business (tampering), not
    light washing print out. The same cells past a date read cut short count."""
    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)
    y, mo, d = (int(v) for v in case.expected["birth"].split("-"))

    def scores(text: str) -> dict[str, int]:
        painted, lines = _birth_patched(case, m, card, text)
        ctx = AlertContext(image, CardRead(corners=corners, photo_to_card=m, card=painted,
                                           lines=lines, side="front"))
        return {a: REGISTRY[a].score(ctx) for a in ("glare", "tampering")}

    whole = scores(f"{y}年{mo}月{d}日")
    assert whole["glare"] < DEFAULT_THRESHOLDS["glare"]
    assert whole["tampering"] >= DEFAULT_THRESHOLDS["tampering"]
    cut_short = scores(f"{y}年{mo}")
    assert cut_short["glare"] >= DEFAULT_THRESHOLDS["glare"]


def test_interim_raises_on_a_validity_period_of_three_months():
    """A temporary card is valid for three months, a regular one for 5 years or more;
    the title need not have been read."""
    case = make_alert_photo(5, "clean", 0.0, "back")

    def score(validity: str) -> int:
        lines = [_line("签发机关某某市公安局", 17.0, 60.0, 40.5),
                 _line("有效期限" + validity, 17.0, 66.0, 47.0)]
        return REGISTRY["interim"].score(_context(case, lines, "back"))

    assert score("2026.10.24-2027.01.23") >= DEFAULT_THRESHOLDS["interim"]
    assert score("2022.10.14-2042.10.14") < DEFAULT_THRESHOLDS["interim"]
    assert score("2022.10.14-长期") < DEFAULT_THRESHOLDS["interim"]
    assert score("2022.10.14-2022.07.14") < DEFAULT_THRESHOLDS["interim"]  # misread: ends before


def test_tampering_does_not_judge_the_typesetting_of_a_card_wrapping_its_address_at_12():
    """The temporary card's portrait side sets its fields otherwise (its birth date in
    one run, its address wrapped after 12 characters); a regular card wraps after 11.
    A temporary card whose title was not read is not judged by the regular layout."""
    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)

    def score(address: str) -> int:
        lines = _truth_lines(case, m, 0.65)
        lines.append(_line(address, 15.0, 15.0 + len(address) * 3.08, 30.0))
        read = CardRead(corners=corners, photo_to_card=m, card=card, lines=lines, side="front")
        return REGISTRY["tampering"].score(AlertContext(image, read))

    assert score("河北省石家庄市鹿泉市南") >= DEFAULT_THRESHOLDS["tampering"]  # 11: regular
    assert score("河北省石家庄市鹿泉市南二") < DEFAULT_THRESHOLDS["tampering"]  # 12: temporary


def _flat_patch_over_name(case, lines_share: float = 1.0) -> tuple[AlertContext, AlertContext]:
    """(as photographed, with a flat patch of paper colour over the name line) for the
    card of ``case`` read with the generator's field boxes."""
    image, corners, card, m = _rectified(case)
    lines = _truth_lines(case, m, lines_share)
    name = lines[0]
    x0, y0 = (int(v) for v in name.quad.min(axis=0))
    x1, y1 = (int(v) for v in name.quad.max(axis=0))
    patched = card.copy()
    region = patched[y0 - 6:y1 + 6, x0 - 6:x1 + 6]
    paper = np.percentile(region.reshape(-1, 3), 90, axis=0)
    region[:] = paper.astype(np.uint8)
    # The name typed again on it: a dark bar where its characters go.
    patched[y0 + 4:y1 - 4, x0 + 2:x1 - 2:6] = 40

    def ctx(c: np.ndarray) -> AlertContext:
        return AlertContext(image, CardRead(corners=corners, photo_to_card=m, card=c,
                                            lines=lines, side=case.side))

    return ctx(card), ctx(patched)


def test_tampering_does_not_judge_the_paper_texture_of_a_card_cut_off():
    """A card cut off by the frame is read from what is left of it, stretched to a
    card's shape: its paper's texture is resampled too. A flat patch over a line is
    evidence on a whole card only."""
    whole, whole_patched = _flat_patch_over_name(make_alert_photo(5, "clean", 0.0, "front"))
    assert REGISTRY["tampering"].score(whole) < DEFAULT_THRESHOLDS["tampering"]
    assert REGISTRY["tampering"].score(whole_patched) >= DEFAULT_THRESHOLDS["tampering"]
    _cut, cut_patched = _flat_patch_over_name(make_alert_photo(9, "border_integrity", 1.0,
                                                               "front"))
    assert cut_patched.cut_off
    assert REGISTRY["tampering"].score(cut_patched) < DEFAULT_THRESHOLDS["tampering"]


def test_glare_needs_a_core_clipped_white():
    """Empty cells about as light as white paper but not clipped (a patch, paper where
    an outline read off the card expects print, on a bright card) are not glare; a
    specular reflection clips its core white in all three channels."""
    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)
    lines = _truth_lines(case, m)
    noise = np.random.default_rng(0).normal(0, 3, card.shape)

    def score(level: float) -> int:
        painted = card.copy()
        # The number's row (its caption and half the number), the grid's slide included.
        ys = slice(int(40 * PX_PER_MM), int(52 * PX_PER_MM))
        xs = slice(int(10 * PX_PER_MM), int(50 * PX_PER_MM))
        painted[ys, xs] = np.clip(level + noise[ys, xs], 0, 255).astype(np.uint8)
        read = CardRead(corners=corners, photo_to_card=m, card=painted, lines=lines,
                        side="front")
        return REGISTRY["glare"].score(AlertContext(image, read))

    assert score(251) < DEFAULT_THRESHOLDS["glare"]  # near white, not clipped
    assert score(262) >= DEFAULT_THRESHOLDS["glare"]  # clipped white throughout


def test_glare_beside_an_object_over_the_card():
    """An object over the card (blocking raised) can pull the reader's outline off the
    card, leaving a cell or two empty where the layout expects print: not judged. Many
    cells washed out white are light whatever else lies on the card."""
    import cv2

    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)
    lines = _truth_lines(case, m)
    covered = card.copy()
    cv2.circle(covered, (680, 170), 70, (150, 150, 155), -1)  # a grey coin over the face

    def scores(x1_mm: float) -> dict[str, int]:
        painted = covered.copy()
        painted[40 * 10:52 * 10, 10 * 10:int(x1_mm * 10)] = 255  # the number's row, white
        ctx = AlertContext(image, CardRead(corners=corners, photo_to_card=m, card=painted,
                                           lines=lines, side="front"))
        return {a: REGISTRY[a].score(ctx) for a in ("blocking_within_border", "glare")}

    few = scores(18.0)
    assert few["blocking_within_border"] >= DEFAULT_THRESHOLDS["blocking_within_border"]
    assert few["glare"] < DEFAULT_THRESHOLDS["glare"]
    many = scores(50.0)
    assert many["blocking_within_border"] >= DEFAULT_THRESHOLDS["blocking_within_border"]
    assert many["glare"] >= DEFAULT_THRESHOLDS["glare"]


def _overexposed(ctx: AlertContext, gain: float) -> AlertContext:
    """The same card brighter by ``gain``, clipped white where it goes past 255."""
    card = np.clip(ctx.card.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    r = ctx.read
    return AlertContext(ctx.image, CardRead(corners=r.corners, photo_to_card=r.photo_to_card,
                                            card=card, lines=r.lines, side=r.side))


def test_tampering_judges_a_patch_on_an_over_exposed_card():
    """On a card over-exposed all over (its plain paper clipped white in places
    everywhere), a patch of the paper's brightest colour is clipped throughout while the
    paper around it keeps its print's fine lines: judged, not taken for glare. A clipped
    patch on a card that is not over-exposed is left alone (a glare spot's look)."""
    case = make_alert_photo(7000300, "clean", 0.0, "front")
    plain, patched = _flat_patch_over_name(case)
    gain = 262.0 / float(np.percentile(plain.card_gray, 60))
    bright, bright_patched = _overexposed(plain, gain), _overexposed(patched, gain)
    assert bright_patched.card_gray.mean() > plain.card_gray.mean()
    assert REGISTRY["tampering"].score(bright) < DEFAULT_THRESHOLDS["tampering"]
    assert REGISTRY["tampering"].score(bright_patched) >= DEFAULT_THRESHOLDS["tampering"]
    # Only the patch clipped (white as a glare spot's core): not judged.
    spot = patched.card.copy()
    x0, y0 = (int(v) for v in patched.lines[0].quad.min(axis=0))
    x1, y1 = (int(v) for v in patched.lines[0].quad.max(axis=0))
    region = spot[y0 - 6:y1 + 6, x0 - 6:x1 + 6]
    region[region > 100] = 255
    r = patched.read
    spotted = AlertContext(patched.image, CardRead(corners=r.corners,
                                                   photo_to_card=r.photo_to_card, card=spot,
                                                   lines=r.lines, side=r.side))
    assert REGISTRY["tampering"].score(spotted) < DEFAULT_THRESHOLDS["tampering"]


def test_tampering_does_not_judge_the_paper_of_a_caption_read_alone():
    """A caption is the card's own print, never the holder's data: a line read as a
    caption alone is not judged for a patch (a plain stretch of paper around a caption
    is no forger's work), the same line read as a value is."""
    case = make_alert_photo(7000300, "clean", 0.0, "front")
    _plain, patched = _flat_patch_over_name(case)
    assert REGISTRY["tampering"].score(patched) >= DEFAULT_THRESHOLDS["tampering"]
    lines = list(patched.lines)
    lines[0] = TextLine(lines[0].quad, "姓名", 0.99)
    r = patched.read
    caption = AlertContext(patched.image, CardRead(corners=r.corners,
                                                   photo_to_card=r.photo_to_card,
                                                   card=r.card, lines=lines, side=r.side))
    assert REGISTRY["tampering"].score(caption) < DEFAULT_THRESHOLDS["tampering"]


def test_tampering_judges_the_typesetting_of_an_over_exposed_card_under_glare(monkeypatch):
    """Glare raised keeps the typesetting from judging a card (a reflection can wash out
    the end of a line), but not on a card over-exposed all over: there the glare alert
    answers to the clipped paper everywhere, while the print, darker than the paper,
    is read whole, and a field set short is as short as on any card."""
    from worker.recognition.alerts import glare
    from worker.recognition.alerts.tampering import OVEREXPOSED, card_clipped

    case = make_alert_photo(5, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)
    read = CardRead(corners=corners, photo_to_card=m, card=card,
                    lines=_truth_lines(case, m, 0.65), side="front")
    normal = AlertContext(image, read)
    bright = _overexposed(normal, 262.0 / float(np.percentile(normal.card_gray, 60)))
    assert card_clipped(bright) >= OVEREXPOSED > card_clipped(normal)
    assert REGISTRY["tampering"].score(normal) >= DEFAULT_THRESHOLDS["tampering"]
    assert REGISTRY["tampering"].score(bright) >= DEFAULT_THRESHOLDS["tampering"]
    monkeypatch.setattr(glare.GlareDetector, "score", lambda self, ctx: 99)
    assert REGISTRY["tampering"].score(normal) < DEFAULT_THRESHOLDS["tampering"]
    assert REGISTRY["tampering"].score(bright) >= DEFAULT_THRESHOLDS["tampering"]


def test_tampering_sees_a_noisy_patch_by_the_fine_lines_it_lacks():
    """A careful forger's patch: paper colour with noise added, the birth date typed
    again on it. The residual texture of the noise is as strong as the paper's (the
    coarse evidence sees nothing), but the security print's fine lines are gone from
    it: raised. The card as photographed is not."""
    import cv2

    from worker.recognition.alerts.tampering import CENTRE_LOG_RATIO, TamperingDetector

    case = make_alert_photo(12, "clean", 0.0, "front")
    image, corners, card, m = _rectified(case)
    lines = _truth_lines(case, m)
    # The birth date as the reader boxes it: a little paper around its print.
    x0, y0 = (int(v) for v in lines[1].quad.min(axis=0))
    x1, y1 = (int(v) for v in lines[1].quad.max(axis=0))
    y0, y1 = y0 - 10, y1 + 10
    lines[1] = TextLine(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32),
                        lines[1].text, 0.99)
    patched = card.copy()
    region = patched[y0 - 6:y1 + 6, x0 - 6:x1 + 6]
    paper = np.percentile(region.reshape(-1, 3), 90, axis=0)
    noise = np.random.default_rng(0).normal(0, 2.0, region.shape[:2])[..., None]
    region[:] = np.clip(paper + noise, 0, 255).astype(np.uint8)
    for cx in range(x0 + 4, x1 - 16, 48):  # the characters typed on it
        cv2.rectangle(patched, (cx, y0 + 12), (cx + 16, y1 - 12), (40, 40, 40), -1)

    def ctx(c: np.ndarray) -> AlertContext:
        return AlertContext(image, CardRead(corners=corners, photo_to_card=m, card=c,
                                            lines=lines, side="front"))

    assert REGISTRY["tampering"].score(ctx(card)) < DEFAULT_THRESHOLDS["tampering"]
    assert TamperingDetector().measure(ctx(patched)) > CENTRE_LOG_RATIO  # coarse: nothing
    assert REGISTRY["tampering"].score(ctx(patched)) >= DEFAULT_THRESHOLDS["tampering"]
