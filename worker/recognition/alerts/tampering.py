"""Tampering: an edited image, a field pasted over or re-typed, or an editor's metadata.

What it measures, four pieces of evidence, the strongest counts:

- **Metadata.** The file says an image editor wrote it (EXIF ``Software`` or XMP
  ``CreatorTool``: Photoshop, GIMP, Meitu/美图, PicsArt, Snapseed, ...). A phone's
  camera firmware writes its own name there; that is not an editor.
- **A pasted patch.** Per text line, the fine texture of the paper around the print
  (guilloche lines, sensor noise: the residual of a 1.2 px Gaussian, on pixels away
  from ink) inside a box hugging the line, against a ring 1.5-3.5 mm further out (or
  the card's median, if that is plainer); only lines where the holder's data is
  printed count (not a caption read alone: the card's own print). A field covered
  with a flat patch of paper colour and typed again has lost that texture right
  around it: the log ratio inside/ring drops well below zero. A careful forger adds
  noise to the patch, which that residual takes for paper's texture; the same ratio of
  the band-pass at the scale of the security print's fine lines (Gaussians of 1 and
  3 px, on paper 5 px and more from ink) still drops, the lines are gone (the weaker
  evidence: it counts from a lower ratio, and not on paper clipped white).
  Every texture figure carries TEXTURE_FLOOR, what JPEG leaves on flat paper, so that
  plain stretches of a card (no guilloche there) do not give ratios of two nothings.
  Lines whose paper is clipped white, or brighter than the ring's paper, are not
  judged: glare washes texture out too, but it adds light, while a patch has the
  colour of the paper between the print's lines. On a card over-exposed all over
  (OVEREXPOSED of its plain paper clipped) that colour is clipped white too, while the
  paper around keeps the print's fine lines where they are darker: there a line
  clipped no less than its ring is judged, unless the glare alert is raised (glare
  clips a spot; over-exposure clips the whole card alike). Not judged on a card cut off by the
  frame (read from what is left of it and stretched to a card's shape, its texture
  with it).

- **Compression.** A JPEG saved by the camera, edited and saved again on the same 8x8
  grid (no crop) has every block compressed twice, except those the editor painted,
  compressed once: compression inconsistent with the rest of the card. The file's
  quantized DCT coefficients are recomputed from the decoded luma (the block DCT on the
  file's grid over its luma quantization table, :attr:`LoadedImage.jpeg_quant`). Per
  low-frequency position the first quantization leaves the card's coefficients on a
  lattice (a coarser first step requantized with the final one: some values never
  occur); the card counts as compressed twice when DQ_MIN_POSITIONS positions show that
  lattice far more often than chance. Then per value line, the share of its 8x8 blocks
  (wholly inside its box, mapped to the photo) compressed once, off the lattice as often
  as chance, is compared with the median of the card's other value lines. A photo
  compressed once, or re-saved whole, has no region that stands out. Not judged on a
  file that is no JPEG, nor one turned by its orientation tag; a first compression finer
  than the last (or as fine) leaves no gaps to see (Lin et al. 2009, Bianchi & Piva
  2012, on aligned double JPEG compression).

- **Typesetting.** The card sets its values in fixed cells, not in a font's own
  advance: each wide character in a cell of about 3.1 mm (the name's about 3.5 mm), the
  number's 18 digits over 48 mm, the birth date's year, month and day in fixed columns.
  A field typed again in an editor runs in the new font's advance and ends short of
  where the card would end it. Per value line, its span from the value column to its
  end, as a share of what the layout gives the text read, is compared with the median
  of the card's other fields (a card read from a rough outline is stretched alike
  everywhere); not judged on a temporary card (or a portrait side that wraps its
  address after 12 characters as the temporary card does: :func:`.interim.
  wraps_like_temporary`), a blurred one, under glare (unless the card is over-exposed
  all over, OVEREXPOSED: glare answers to the paper clipped everywhere there, while the
  print, darker than the paper, is read whole), nor on a
  card cut off, a copy, a recapture or a card with an object over it (the other
  alerts' decision points: the print there is not laid out for reading).

Why: the vendor's own alert "does not support fine-grained editing" (document); what
it catches, and what this catches, is the cheap forgery: cover a field, type another
value, save. The patch and the new text are made in the editor, not photographed, so
they lack the photo's texture, and the editor's text box knows nothing of the card's
cells. Stroke sharpness was tried as evidence too, but a card's own lines vary as much
(bold numbers, blurred thin captions) as a re-typed one. A field re-typed in a font
whose advance happens to match the card's cells, in a stretch of the card without
security print, is not seen.
"""

from __future__ import annotations

import functools
import re

import cv2
import numpy as np

from worker.recognition.alerts.base import AlertContext, fit_layout, logistic_score
from worker.recognition.layout import BACK_LABELS, FRONT_LABELS, FRONT_VALUE_X_MM, PX_PER_MM, mm
from worker.recognition.ocr import TextLine

EDITORS = re.compile(
    r"photoshop|gimp|lightroom|meitu|美图|美颜|醒图|picsart|snapseed|paint\.net|pixlr|"
    r"canva|affinity|acdsee|光影魔术手|fotor|photoscape|polarr|facetune|illustrator|"
    r"pixelmator|photodirector|photo director|inshot|picmonkey|krita|photopea",
    re.IGNORECASE,
)
SCORE_EDITOR = 95

MIN_LINE_HEIGHT = 14  # card px
RESIDUAL_SIGMA = 1.2
INK_MARGIN = 25  # grey levels under the local paper level that count as ink
INNER_PAD = 3  # px around the line box
RING_GAP, RING_OUT = 15, 35  # px: the ring around a line starts and ends here
MIN_PIXELS = 300
# Grey levels added to every texture figure: what JPEG and a little noise leave on flat
# paper. Below it a ratio of two textures is a ratio of two nothings.
TEXTURE_FLOOR = 0.4
# The fine lines of the card's security print (guilloche, 0.7-2.2 mm apart, drawn thin):
# the band-pass between Gaussians of FINE_SIGMAS px, on paper FINE_INK_MARGIN px and more
# from ink (its edges are strong at that scale), with FINE_FLOOR added. A patch of flat
# colour with noise added (a careful forger's) has the noise's fine texture, which the
# residual above sees as paper's, but none of the lines. Score 50 at
# CENTRE_FINE_LOG_RATIO (calibration: legitimate photos to -0.25, a tight crop's name
# line on a plain stretch; patches the residual misses -0.32 to -0.55).
FINE_SIGMAS = (1.0, 3.0)
FINE_INK_MARGIN = 5
FINE_FLOOR = 0.1
FINE_MIN_PIXELS = 600
CENTRE_FINE_LOG_RATIO = -0.30
WIDTH_FINE_LOG_RATIO = 0.02
CLIPPED = 250  # grey level: over-exposed, the texture is gone whatever was there
MAX_CLIPPED = 0.2  # share of a line's paper that may be clipped for it to be judged
# ... unless the card is over-exposed: this share of its plain paper clipped white.
OVEREXPOSED = 0.25
BRIGHTER = 4.0  # grey levels over the ring's paper (its 90th percentile): glare, not paste
# Score 50 at this log ratio of texture inside a line's box to around it; genuine
# cards measure 0 to -0.2, a flat patch -0.3 and below.
CENTRE_LOG_RATIO = -0.25
WIDTH_LOG_RATIO = 0.05


# --- the typesetting -----------------------------------------------------------------
# Where the card's typesetting puts the end of a field, in mm of the published layout.
# The card prints its values in fixed cells, not in a font's own advance: a wide
# character takes CELL_MM (the name NAME_CELL_MM), the 18 digits of the number span
# NUMBER_MM, the birth date's year, month and day stand in fixed columns (its 日 ends
# at BIRTH_END_MM), the validity period's dates run to VALID_END_MM.
BACK_VALUE_X_MM = 31.0
CELL_MM = 3.08
NAME_CELL_MM = 3.5
NUMBER_MM = (29.5, 77.5)
BIRTH_END_MM = 46.0
VALID_END_MM = (65.5, 54.3)  # two dates; a date and 长期
# A line typed in an editor is set in the new font's own advance, with no cells: it ends
# short of where the card would end it (or, in a larger font, beyond). Score 50 at this
# shortfall of the field's span (calibration seeds: legitimate photos at most 0.16, a
# dim one; fields typed again from 0.1, most from 0.18; the validity period's digit
# widths vary with the card's font: VALID_SLACK more). Not judged where the print
# itself is cut short: a temporary card (laid out otherwise), a blurred card, glare
# over the text (the glare alert's decision points).
CENTRE_SHORTFALL = 0.165
WIDTH_SHORTFALL = 0.01
VALID_SLACK = 0.08
# A line this far short of the typesetting marks the paper past its end as a short
# field's (short_field_zones).
SHORT_ZONE = 0.1
_LABELS = FRONT_LABELS + BACK_LABELS

# --- the compression ---------------------------------------------------------------
# The low-frequency DCT positions judged (u + v <= 4: the first 15 in zigzag order),
# where even a card's plain paper and print leave coefficients other than zero.
DQ_FREQS = 5
# Per position, the first quantization step sought among (q2, DQ_MAX_RATIO * q2]; a
# candidate counts where at most DQ_MAX_CHANCE of the integers can be reached from its
# lattice (a step smaller than the final one leaves no gaps to see), judged on at least
# DQ_MIN_COEFFS coefficients other than zero. DQ_TOLERANCE: what the decoded pixels'
# rounding adds to a coefficient (in its units, on each side) before it is quantized again.
DQ_MAX_RATIO = 4
DQ_MAX_CHANCE = 0.8
DQ_MIN_COEFFS = 200
DQ_TOLERANCE = 0.5
# A position shows the first quantization when the card's coefficients fall on its
# lattice that much more often than chance ((rate - chance) / (1 - chance)); the card
# was compressed twice on one grid when DQ_MIN_POSITIONS positions show it
# (calibration: single-compressed photos show at most 7 by chance, double-compressed
# ones 8 to 15).
DQ_MIN_GAIN = 0.5
DQ_MIN_POSITIONS = 8
# A value line is judged on its 8x8 blocks wholly inside its box, when single and double
# compression there would differ by DQ_MIN_EVIDENCE coefficients off the lattice.
DQ_MIN_BLOCKS = 4
DQ_MIN_EVIDENCE = 5.0
# Score 50 at this share of a line's blocks compressed once more than the median of the
# card's other value lines (calibration: legitimate photos and the other alerts'
# positives at most 0.43, on cards that do not show double compression; re-typed fields
# on cards that do 0.55 and more, most about 1).
CENTRE_ONCE = 0.45
WIDTH_ONCE = 0.03
_DATE = re.compile(r"\d{4}年\d{1,2}月\d{1,2}日$")
_NUMBER = re.compile(r"\d{17}[\dX]")
_VALID = re.compile(r"\d{4}\.\d{2}\.\d{2}-?(\d{4}\.\d{2}\.\d{2}|长期)")


def _wide(text: str) -> bool:
    return all(ord(ch) >= 0x2E80 for ch in text)


def _typeset_fields(lines: list[TextLine], side: str | None,
                    ) -> tuple[np.ndarray, list[tuple[TextLine, float, float, float, float]]]:
    """The fitted layout map and, per value line the typesetting judges, (line, its span
    as a share of what the layout gives the text read, slack, start mm, end mm)."""
    anchors = [ln for ln in lines if sum(ch.isdigit() for ch in ln.text) < 15]
    m = fit_layout(anchors, side)
    scale, tx, ty = m[0, 0], m[0, 2], m[1, 2]
    fields: list[tuple[TextLine, float, float, float, float]] = []
    for ln in lines:
        text = ln.text
        if text in _LABELS:
            continue
        x0 = (ln.x0 - tx) / scale / PX_PER_MM
        x1 = (ln.x1 - tx) / scale / PX_PER_MM
        cy = (ln.cy - ty) / scale / PX_PER_MM
        for label in _LABELS:
            if text.startswith(label):
                text = text[len(label):]
                break
        slack = 0.0
        if side == "front":
            start = FRONT_VALUE_X_MM
            if _DATE.search(text) and 20 < cy < 27:
                end = BIRTH_END_MM
            elif _NUMBER.fullmatch(text) and cy > 42:
                start, end = NUMBER_MM
            elif len(text) >= 4 and _wide(text) and x0 < start + 2.5 and 27 < cy < 44:
                end = start + len(text) * CELL_MM
            elif 2 <= len(text) <= 4 and _wide(text) and x0 < start + 2.5 and cy < 13:
                end = start + len(text) * NAME_CELL_MM
            else:
                continue
        elif side == "back":
            start = BACK_VALUE_X_MM
            if len(text) >= 4 and _wide(text) and 37 < cy < 44 and x0 < start + 2.5:
                end = start + len(text) * CELL_MM
            elif _VALID.fullmatch(text) and cy > 44:
                end = VALID_END_MM[text.endswith("长期")]
                slack = VALID_SLACK
            else:
                continue
        else:
            continue
        fields.append((ln, (x1 - start) / (end - start), slack, start, end))
    return m, fields


def _references(fields: list) -> list[float]:
    """Per field the median share of the card's other fields (1 with fewer than two)."""
    refs = []
    for i in range(len(fields)):
        others = [f[1] for j, f in enumerate(fields) if j != i]
        refs.append(float(np.median(others)) if len(others) >= 2 else 1.0)
    return refs


def typeset_shortfall(lines: list[TextLine], side: str | None) -> float:
    """The largest shortfall (0..1) of a value line's span against where the card's
    typesetting would end it, as a share of that span; 0 when nothing can be judged.

    Each field is judged against the rest of the card: its span is compared with the
    median of the other fields' spans (each as a share of what the layout gives it),
    when at least two others were judged, else with the layout alone. A card read
    from a rough outline is stretched or shrunk everywhere alike; a field typed again
    is out of step with the rest. The layout is fitted to the captions and titles only
    (not to the number, which could be the field typed again)."""
    _m, fields = _typeset_fields(lines, side)
    worst = 0.0
    for (_ln, share, slack, _s, _e), ref in zip(fields, _references(fields), strict=True):
        worst = max(worst, 1.0 - share / max(ref, 1e-6) - slack)
    return worst


def short_field_zones(lines: list[TextLine], side: str | None,
                      ) -> list[tuple[float, float, float, float]]:
    """Card-pixel boxes (x0, y0, x1, y1) where the card's typesetting would continue a
    value line that ends short of it (a shortfall over SHORT_ZONE): from the line's end
    to where the layout, scaled like the card's other fields, ends the text read. The
    text read is whole there (the layout's end is computed from it), so the paper past
    its end is empty because the line is set short, not because something washed it
    out: glare does not count those cells."""
    m, fields = _typeset_fields(lines, side)
    scale, tx = m[0, 0], m[0, 2]
    zones = []
    for (ln, share, slack, start, end), ref in zip(fields, _references(fields), strict=True):
        if 1.0 - share / max(ref, 1e-6) - slack <= SHORT_ZONE:
            continue
        x_end = (start + ref * (end - start)) * PX_PER_MM * scale + tx
        zones.append((float(ln.x1), float(ln.y0), float(x_end), float(ln.y1)))
    return zones


def _in_value_zone(ln: TextLine, side: str | None) -> bool:
    """Whether a line lies where the holder's data is printed (what a forger changes),
    not on the titles, the emblem or the portrait, whose own texture differs."""
    if len(ln.text) < 2 or ln.text in _LABELS:
        return False  # a caption alone is the card's own print, never the holder's data
    if side == "front":
        return ln.cy >= mm(42) or (ln.x0 >= mm(14) and ln.x1 <= mm(56))
    return ln.cy >= mm(35)


def _paper_masks(ctx: AlertContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the card's paper away from ink, inside the frame; the surroundings of its text
    lines; the paper FINE_INK_MARGIN px and more from ink, inside the frame, where the
    band-pass of the fine lines is not the ink's own edge), card pixels."""
    g = ctx.card_gray
    h, w = g.shape
    paper = cv2.dilate(g, np.ones((15, 15), np.uint8))
    ink = (g.astype(np.int16) < paper.astype(np.int16) - INK_MARGIN).astype(np.uint8)
    near_ink = cv2.dilate(ink, np.ones((5, 5), np.uint8))
    k = 2 * FINE_INK_MARGIN + 1
    far = (cv2.dilate(ink, np.ones((k, k), np.uint8)) == 0) & ctx.in_frame
    lines = np.zeros((h, w), np.uint8)
    for ln in ctx.lines:
        cv2.fillPoly(lines, [np.round(ln.quad).astype(np.int32)], 1)
    near_lines = cv2.dilate(lines, np.ones((11, 11), np.uint8)) > 0
    background = (near_ink == 0) & ctx.in_frame
    return background, near_lines, far


def card_clipped(ctx: AlertContext) -> float:
    """The share of the card's plain paper (away from ink and text lines) clipped white:
    OVEREXPOSED and more is a card over-exposed all over."""
    background, near_lines, _far = _paper_masks(ctx)
    return _clipped_share(ctx.card_gray, background & ~near_lines)


def _clipped_share(gray: np.ndarray, plain: np.ndarray) -> float:
    level = gray[plain]
    return float((level >= CLIPPED).mean()) if level.size else 0.0


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)
    m = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m


_DQ_POSITIONS = [(u, v) for u in range(DQ_FREQS) for v in range(DQ_FREQS) if u + v < DQ_FREQS]
# Row-major 8x8 block (64 values) -> its DCT coefficients at _DQ_POSITIONS.
_DCT_BASIS = np.stack([np.outer(_dct_matrix()[u], _dct_matrix()[v]).ravel()
                       for u, v in _DQ_POSITIONS], 1).astype(np.float32)


def _on_lattice(c2: np.ndarray, q2: float, q1: int) -> np.ndarray:
    """Whether a coefficient quantized with step q2 can come from one quantized with q1."""
    v = c2 * q2
    return np.abs(v - np.rint(v / q1) * q1) <= q2 / 2 + DQ_TOLERANCE


@functools.lru_cache(maxsize=4096)
def _lattice_chance(q2: float, q1: int) -> float:
    """The share of the integers (-60..60 but 0) on q1's lattice requantized with q2."""
    ints = np.arange(-60, 61)
    return float(_on_lattice(ints[ints != 0], q2, q1).mean())


def compressed_once(ctx: AlertContext) -> float:
    """The largest share of a value line's 8x8 blocks compressed once, more than the
    median of the card's other value lines, on a JPEG compressed twice on one grid; 0
    when nothing can be judged.

    The stored coefficients are recomputed from the decoded pixels: the block DCT of
    the luma on the file's 8x8 grid, divided by its quantization table and rounded.
    Per low-frequency position, the first quantization step is the one on whose
    lattice (requantized with the final step) the card's coefficients fall far more
    often than chance; a block compressed once has its coefficients off that lattice
    as often as chance has."""
    image = ctx.image
    quant = getattr(image, "jpeg_quant", None)
    if quant is None or image.exif_transposed or not ctx.readable:
        return 0.0
    h, w = ctx.photo.shape[:2]
    c = ctx.corners
    bx0 = max(0, int(np.floor(c[:, 0].min() / 8)))
    by0 = max(0, int(np.floor(c[:, 1].min() / 8)))
    bx1 = min(w // 8, int(np.ceil(c[:, 0].max() / 8)))
    by1 = min(h // 8, int(np.ceil(c[:, 1].max() / 8)))
    nby, nbx = by1 - by0, bx1 - bx0
    if nby < 4 or nbx < 4:
        return 0.0
    px = ctx.photo[by0 * 8:by1 * 8, bx0 * 8:bx1 * 8].astype(np.float32)
    y = cv2.cvtColor(px, cv2.COLOR_BGR2GRAY) - 128.0  # the luma, unrounded
    blocks = y.reshape(nby, 8, nbx, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    coef = (blocks @ _DCT_BASIS).reshape(nby, nbx, len(_DQ_POSITIONS))
    q = np.asarray(quant, np.float64).reshape(8, 8)
    off = np.zeros((nby, nbx))
    p_once = np.zeros((nby, nbx))
    p_twice = np.zeros((nby, nbx))
    shown = 0
    for k, (u, v) in enumerate(_DQ_POSITIONS):
        q2 = float(q[u, v])
        c2 = np.rint(coef[..., k] / q2)
        nz = c2 != 0
        if nz.sum() < DQ_MIN_COEFFS:
            continue
        lo = int(c2.min())
        counts = np.bincount((c2[nz] - lo).astype(np.int64))
        values = np.flatnonzero(counts) + lo
        counts = counts[counts > 0]
        best = None
        for q1 in range(int(q2) + 1, int(DQ_MAX_RATIO * q2) + 2):
            chance = _lattice_chance(q2, q1)
            if chance > DQ_MAX_CHANCE:
                continue
            rate = float(counts[_on_lattice(values, q2, q1)].sum() / counts.sum())
            gain = (rate - chance) / (1 - chance)
            if best is None or gain > best[0]:
                best = (gain, q1, rate, chance)
        if best is None or best[0] < DQ_MIN_GAIN:
            continue
        shown += 1
        _gain, q1, rate, chance = best
        off += nz & ~_on_lattice(c2, q2, q1)
        p_once += nz * (1 - chance)
        p_twice += nz * (1 - rate)
    if shown < DQ_MIN_POSITIONS:
        return 0.0  # not compressed twice on this grid: no region can stand out
    to_photo = ctx.card_to_photo
    shares = []
    for ln in ctx.lines:
        if ln.height < MIN_LINE_HEIGHT or ln.x1 - ln.x0 < 1.5 * ln.height:
            continue
        if not _in_value_zone(ln, ctx.side):
            continue
        quad = cv2.perspectiveTransform(np.asarray(ln.quad, np.float32).reshape(-1, 1, 2),
                                        to_photo).reshape(-1, 2)
        # The blocks of the line's bounding box (in the card's region), then those wholly
        # inside the line's quad.
        lx0, ly0 = max(bx0, int(quad[:, 0].min()) // 8), max(by0, int(quad[:, 1].min()) // 8)
        lx1 = min(bx1, int(np.ceil(quad[:, 0].max() / 8)))
        ly1 = min(by1, int(np.ceil(quad[:, 1].max() / 8)))
        if lx1 - lx0 < 2 or ly1 - ly0 < 1:
            continue
        mask = np.zeros(((ly1 - ly0) * 8, (lx1 - lx0) * 8), np.uint8)
        cv2.fillPoly(mask, [np.round(quad - [lx0 * 8, ly0 * 8]).astype(np.int32)], 1)
        whole = mask.reshape(ly1 - ly0, 8, lx1 - lx0, 8).sum((1, 3)) == 64
        if whole.sum() < DQ_MIN_BLOCKS:
            continue
        sub = (slice(ly0 - by0, ly1 - by0), slice(lx0 - bx0, lx1 - bx0))
        once, twice = float(p_once[sub][whole].sum()), float(p_twice[sub][whole].sum())
        if once - twice < DQ_MIN_EVIDENCE:
            continue
        shares.append((float(off[sub][whole].sum()) - twice) / (once - twice))
    worst = 0.0
    for i, share in enumerate(shares):
        others = shares[:i] + shares[i + 1:]
        if others:
            worst = max(worst, share - float(np.median(others)))
    return worst


class TamperingDetector:
    name = "tampering"

    def measure(self, ctx: AlertContext) -> float:
        """The lowest log ratio of paper texture inside a value line's box to around it
        (0 when no line can be judged; a pasted patch measures well below zero)."""
        return self._texture(ctx)

    def score(self, ctx: AlertContext) -> int:
        if EDITORS.search(ctx.software or ""):
            return SCORE_EDITOR
        if not ctx.readable:
            return 0  # no field read: no value line to judge a patch by
        coarse, fine = self._textures(ctx)
        patch = max(logistic_score(-coarse, -CENTRE_LOG_RATIO, WIDTH_LOG_RATIO),
                    logistic_score(-fine, -CENTRE_FINE_LOG_RATIO, WIDTH_FINE_LOG_RATIO))
        if patch >= 50 and self._cut_off(ctx):
            patch = 0  # read from what is left of the card, stretched: its texture too
        if patch >= 50:
            return patch
        once = logistic_score(compressed_once(ctx), CENTRE_ONCE, WIDTH_ONCE)
        if once >= 50:
            return once
        return max(patch, once, self._typeset_score(ctx))

    def _typeset_score(self, ctx: AlertContext) -> int:
        shortfall = typeset_shortfall(ctx.lines, ctx.side)
        if shortfall <= CENTRE_SHORTFALL - 4 * WIDTH_SHORTFALL:
            return 0  # nothing out of step: the abstentions below need not be computed
        from worker.recognition.alerts.blur import CENTRE_RATIO as BLUR_CENTRE_RATIO
        from worker.recognition.alerts.blur import BlurDetector
        from worker.recognition.alerts.glare import GlareDetector
        from worker.recognition.alerts.interim import InterimDetector, wraps_like_temporary

        if InterimDetector().score(ctx) >= 50 or wraps_like_temporary(ctx.lines, ctx.side):
            # A temporary card (or one that wraps its address as they do): laid out otherwise.
            return 0
        if BlurDetector().measure(ctx) > BLUR_CENTRE_RATIO:
            return 0  # print faint and spread everywhere
        if GlareDetector().score(ctx) >= 50 and card_clipped(ctx) < OVEREXPOSED:
            # The end of a line washed out by glare is no shorter print; on a card
            # over-exposed all over, glare answers to the clipped paper, not the print.
            return 0
        # Where the card's print cannot be read for its layout: a card cut off by the
        # frame (read from what is left of it), a copy or a recapture (a sheet's or a
        # screen's outline), an object over the end of a line.
        from worker.recognition.alerts.blocking import BlockingDetector
        from worker.recognition.alerts.border_integrity import BorderIntegrityDetector
        from worker.recognition.alerts.copy import CopyDetector
        from worker.recognition.alerts.reproduce import ReproduceDetector

        if ctx.cut_off or any(d.score(ctx) >= 50 for d in (
                CopyDetector(), ReproduceDetector(), BorderIntegrityDetector(),
                BlockingDetector())):
            return 0
        return logistic_score(shortfall, CENTRE_SHORTFALL, WIDTH_SHORTFALL)

    @staticmethod
    def _cut_off(ctx: AlertContext) -> bool:
        """Whether the card is cut off by the frame (border integrity's decision point or
        the share of its outline outside the photo)."""
        from worker.recognition.alerts.border_integrity import BorderIntegrityDetector

        return ctx.cut_off or BorderIntegrityDetector().score(ctx) >= 50

    def explain(self, ctx: AlertContext) -> dict:
        coarse, fine = self._textures(ctx)
        return {"texture": round(coarse, 3), "fine_lines": round(fine, 3),
                "shortfall": round(typeset_shortfall(ctx.lines, ctx.side), 3),
                "compressed_once": round(compressed_once(ctx), 3),
                "typeset": self._typeset_score(ctx)}

    # --- the pasted patch --------------------------------------------------------------

    @staticmethod
    def _glare_raised(ctx: AlertContext) -> bool:
        from worker.recognition.alerts.glare import GlareDetector

        return GlareDetector().score(ctx) >= 50

    def _texture(self, ctx: AlertContext) -> float:
        return self._textures(ctx)[0]

    def _textures(self, ctx: AlertContext) -> tuple[float, float]:
        """(the lowest log ratio of the residual texture, of the fine lines' band-pass)
        inside a value line's box to around it; 0 when no line can be judged."""
        g = ctx.card_gray.astype(np.float32)
        h, w = g.shape
        residual = np.abs(g - cv2.GaussianBlur(g, (0, 0), RESIDUAL_SIGMA))
        background, near_lines, far = _paper_masks(ctx)
        # The paper's texture over the whole card: a line in a naturally plain stretch
        # of paper must not look pasted just because its neighbourhood is busier.
        plain = residual[background & ~near_lines]
        e_card = float(np.median(plain)) + TEXTURE_FLOOR if plain.size else float("inf")
        card_clipped_share = _clipped_share(ctx.card_gray, background & ~near_lines)
        fine = np.abs(cv2.GaussianBlur(g, (0, 0), FINE_SIGMAS[0])
                      - cv2.GaussianBlur(g, (0, 0), FINE_SIGMAS[1]))
        plain_fine = fine[far & ~near_lines]
        f_card = float(np.median(plain_fine)) + FINE_FLOOR if plain_fine.size else float("inf")
        glare_raised: bool | None = None
        lowest = lowest_fine = 0.0
        for ln in ctx.lines:
            if ln.height < MIN_LINE_HEIGHT or ln.x1 - ln.x0 < 1.5 * ln.height:
                continue
            if not _in_value_zone(ln, ctx.side):
                continue
            x0, y0 = int(ln.x0) - INNER_PAD, int(ln.y0) - INNER_PAD
            x1, y1 = int(ln.x1) + INNER_PAD, int(ln.y1) + INNER_PAD
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                continue
            inner = background[y0:y1, x0:x1]
            ox0, oy0 = max(0, x0 - RING_OUT), max(0, y0 - RING_OUT)
            ox1, oy1 = min(w, x1 + RING_OUT), min(h, y1 + RING_OUT)
            ring = background[oy0:oy1, ox0:ox1] & ~near_lines[oy0:oy1, ox0:ox1]
            gap = np.zeros_like(ring)
            gy0, gx0 = max(0, y0 - RING_GAP) - oy0, max(0, x0 - RING_GAP) - ox0
            gap[gy0:y1 + RING_GAP - oy0, gx0:x1 + RING_GAP - ox0] = True
            ring &= ~gap
            if inner.sum() < MIN_PIXELS or ring.sum() < MIN_PIXELS:
                continue
            # Glare washes texture out too, but it brightens the paper beyond its own
            # white; a patch has the colour of the paper between the print's fine lines
            # (the ring's brightest), which is lighter than the ring on average.
            paper_in = g[y0:y1, x0:x1][inner]
            clipped_in = float((paper_in >= CLIPPED).mean())
            whole = clipped_in <= MAX_CLIPPED
            if not whole:
                # Glare clips a spot of the card; an over-exposed card is clipped all
                # over. There a line clipped no less than its ring (a patch of the
                # paper's brightest colour) is judged, unless glare is raised.
                clipped_ring = float((g[oy0:oy1, ox0:ox1][ring] >= CLIPPED).mean())
                if card_clipped_share < OVEREXPOSED or clipped_in < clipped_ring:
                    continue
                if glare_raised is None:
                    glare_raised = self._glare_raised(ctx)
                if glare_raised:
                    continue
            level_in = float(np.median(paper_in))
            paper_ring = float(np.percentile(g[oy0:oy1, ox0:ox1][ring], 90))
            if level_in > paper_ring + BRIGHTER:
                continue
            e_in = float(np.median(residual[y0:y1, x0:x1][inner])) + TEXTURE_FLOOR
            e_ring = float(np.median(residual[oy0:oy1, ox0:ox1][ring])) + TEXTURE_FLOOR
            lowest = min(lowest, float(np.log(e_in / min(e_ring, e_card))))
            if not whole:
                continue  # clipped paper has no fine lines left to compare
            inner_f = far[y0:y1, x0:x1]
            ring_f = far[oy0:oy1, ox0:ox1] & ~near_lines[oy0:oy1, ox0:ox1] & ~gap
            if inner_f.sum() < FINE_MIN_PIXELS or ring_f.sum() < MIN_PIXELS:
                continue
            f_in = float(np.median(fine[y0:y1, x0:x1][inner_f])) + FINE_FLOOR
            f_ring = float(np.median(fine[oy0:oy1, ox0:ox1][ring_f])) + FINE_FLOOR
            lowest_fine = min(lowest_fine, float(np.log(f_in / min(f_ring, f_card))))
        return lowest, lowest_fine
