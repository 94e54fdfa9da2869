"""Find ID cards in a photo: four corners per card, in photo coordinates.

A card is a light, rounded rectangle of known aspect ratio (85.6 × 54 mm). We look for
it with classical image processing on a downscaled copy, which costs a few milliseconds
and no model: several edge and brightness maps each propose closed contours, a contour
becomes a quadrilateral (its sides are fitted as straight lines, so the rounded corners
do not bias the corners), and candidates are ranked by how card-like they are (aspect
ratio, fill, area, straightness). The caller confirms a candidate by reading it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from worker.recognition.imageio import stretch_contrast
from worker.recognition.layout import ASPECT

WORK_SIDE = 640  # px, longer side of the copy we search on
MIN_AREA_FRACTION = 0.04  # cards covering less than this are not looked for
ASPECT_TOLERANCE = 0.18  # perspective may change the aspect by ~10 %; leave room
# A card shown on a screen or copied onto a sheet: the screen, the sheet, or a quad made
# of their sides and the card's, is card-shaped too and scores higher (it is larger).
# A card-shaped candidate nested inside a better one is read first when it is a clean
# rectangle, lies clear of at least two of the outer one's sides, and what lies between
# the two is not the card's own paper.
NESTED_INSIDE = 0.9  # share of the inner quad inside the outer one
NESTED_AREA = (0.25, 0.85)  # inner area / outer area
NESTED_SCORE_DROP = 0.12  # the inner quad's score may be this much lower
NESTED_SIDE_RATIO = 0.9  # opposite sides of the inner quad agree this well
NESTED_CLEAR = 0.05  # of the inner quad's short side: a side this far inside is clear
NESTED_COLOUR = 20.0  # Lab distance between the card's rim and what lies around it


@dataclass(frozen=True)
class CardQuad:
    """Corners tl, tr, br, bl with the card's long side horizontal (tl→tr is long).

    Whether the card is upside down is not known yet: that needs the text.
    """

    corners: np.ndarray  # 4×2 float32, photo pixels
    score: float

    @property
    def area(self) -> float:
        return float(cv2.contourArea(self.corners.astype(np.float32)))


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Order four points clockwise starting so that the first edge is a long edge."""
    pts = np.asarray(pts, dtype=np.float32).reshape(4, 2)
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise in image coordinates (y down)
    # Start at the point nearest the top-left so results are stable, then make the first
    # edge a long one.
    start = int(np.argmin(pts[:, 0] + pts[:, 1]))
    pts = np.roll(pts, -start, axis=0)
    e01 = np.linalg.norm(pts[1] - pts[0]) + np.linalg.norm(pts[2] - pts[3])
    e12 = np.linalg.norm(pts[2] - pts[1]) + np.linalg.norm(pts[3] - pts[0])
    if e12 > e01:
        pts = np.roll(pts, -1, axis=0)
    return pts


def _line_intersection(l1: np.ndarray, l2: np.ndarray) -> np.ndarray | None:
    (vx1, vy1, x1, y1), (vx2, vy2, x2, y2) = l1, l2
    det = vx1 * (-vy2) - vy1 * (-vx2)
    if abs(det) < 1e-6:
        return None
    t = ((x2 - x1) * (-vy2) - (y2 - y1) * (-vx2)) / det
    return np.array([x1 + t * vx1, y1 + t * vy1], dtype=np.float32)


def _fit_quad(contour: np.ndarray) -> np.ndarray | None:
    """A quadrilateral for a card-shaped contour, corners at the fitted sides' crossings."""
    hull = cv2.convexHull(contour)
    peri = cv2.arcLength(hull, True)
    approx = None
    for eps in (0.02, 0.03, 0.045, 0.06, 0.08):
        a = cv2.approxPolyDP(hull, eps * peri, True)
        if len(a) == 4:
            approx = a.reshape(4, 2).astype(np.float32)
            break
    if approx is None:
        approx = cv2.boxPoints(cv2.minAreaRect(hull)).astype(np.float32)
    # Refit each side on the contour points near it, ignoring the corner arcs.
    pts = contour.reshape(-1, 2).astype(np.float32)
    lines = []
    for i in range(4):
        a, b = approx[i], approx[(i + 1) % 4]
        ab = b - a
        length = float(np.linalg.norm(ab))
        if length < 4:
            return None
        u = ab / length
        n = np.array([-u[1], u[0]])
        rel = pts - a
        along = rel @ u
        dist = np.abs(rel @ n)
        keep = (along > 0.12 * length) & (along < 0.88 * length) & (dist < max(3.0, 0.03 * length))
        if keep.sum() >= 8:
            lines.append(cv2.fitLine(pts[keep], cv2.DIST_HUBER, 0, 0.01, 0.01).reshape(4))
        else:
            lines.append(np.array([u[0], u[1], a[0], a[1]], dtype=np.float32))
    corners = []
    for i in range(4):
        p = _line_intersection(lines[i - 1], lines[i])
        if p is None:
            return None
        corners.append(p)
    quad = np.array(corners, dtype=np.float32)
    # Sides refitted badly (a background edge pulled a line away): keep the approximation.
    if np.abs(quad - approx).max() > 0.08 * peri / 4:
        quad = approx
    return quad


def _quad_aspect(q: np.ndarray) -> float:
    long_ = (np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2
    short = (np.linalg.norm(q[2] - q[1]) + np.linalg.norm(q[3] - q[0])) / 2
    return float(long_ / max(short, 1e-3))


def _edge_maps(gray: np.ndarray, bgr: np.ndarray) -> list[np.ndarray]:
    """Binary maps whose contours may outline the card."""
    maps = []
    blur = cv2.GaussianBlur(gray, (5, 5), 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    for lo, hi in ((8, 24), (20, 60), (50, 150)):
        e = cv2.Canny(blur, max(5, int(lo)), max(15, int(hi)))
        maps.append(cv2.dilate(e, kernel, iterations=1))
    # Colour edges catch a card on a background of the same brightness.
    lab = cv2.cvtColor(cv2.GaussianBlur(bgr, (5, 5), 0), cv2.COLOR_BGR2LAB)
    grad = np.zeros(gray.shape, np.float32)
    for ch in range(3):
        gx = cv2.Sobel(lab[:, :, ch], cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lab[:, :, ch], cv2.CV_32F, 0, 1, ksize=3)
        grad = np.maximum(grad, cv2.magnitude(gx, gy))
    thr = max(20.0, float(np.percentile(grad, 90)))
    maps.append(cv2.dilate((grad > thr).astype(np.uint8) * 255, kernel, iterations=1))
    # The card is lighter than most backgrounds: Otsu on brightness, closed over the text.
    _, bright = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    close = cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15))
    maps.append(cv2.morphologyEx(bright, cv2.MORPH_CLOSE, close))
    return maps


def _support(edges: np.ndarray, quad: np.ndarray, samples: int = 48) -> float:
    """Fraction of points along the quad's sides that lie on an edge.

    Corners are skipped: a card's corners are rounded, so its sides' crossings are not
    on the card.
    """
    h, w = edges.shape
    t = np.linspace(0.1, 0.9, samples, dtype=np.float32)[:, None]
    hits = 0.0
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        pts = np.rint(a + (b - a) * t).astype(int)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        if inside.any():
            hits += float(edges[pts[inside, 1], pts[inside, 0]].astype(bool).sum())
    return hits / (4 * samples)


def _line_params(seg: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = seg.astype(np.float32)
    v = np.array([x2 - x1, y2 - y1], dtype=np.float32)
    v /= max(float(np.linalg.norm(v)), 1e-6)
    return np.array([v[0], v[1], x1, y1], dtype=np.float32)


_LSD = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)


def _segment_quads(gray: np.ndarray, min_len: float) -> list[np.ndarray]:
    """Quads made of two pairs of long straight segments, roughly perpendicular.

    Finds cards whose outline does not close into one contour: a side that touches
    another object, or a side with little contrast against the background.
    """
    found = _LSD.detect(gray)[0]
    if found is None:
        return []
    segs = found.reshape(-1, 4)
    lengths = np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1])
    segs = segs[lengths >= min_len]
    if len(segs) < 4:
        return []
    lengths = np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1])
    segs = segs[np.argsort(-lengths)][:40]
    lines = [_line_params(s) for s in segs]
    angles = np.array([np.arctan2(ln[1], ln[0]) % np.pi for ln in lines])
    # Merge collinear segments: same angle and the same offset from the origin.
    offsets = np.array([ln[2] * -ln[1] + ln[3] * ln[0] for ln in lines])
    keep: list[int] = []
    for i in range(len(lines)):
        dup = False
        for j in keep:
            da = abs(angles[i] - angles[j])
            da = min(da, np.pi - da)
            if da < np.deg2rad(3) and abs(abs(offsets[i]) - abs(offsets[j])) < 6:
                dup = True
                break
        if not dup:
            keep.append(i)
    lines = [lines[i] for i in keep][:24]
    angles = angles[keep][:24]
    n = len(lines)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            da = abs(angles[i] - angles[j])
            da = min(da, np.pi - da)
            if da < np.deg2rad(12):
                pairs.append((i, j))
    quads = []
    for a in range(len(pairs)):
        i, j = pairs[a]
        for b in range(a + 1, len(pairs)):
            k, m = pairs[b]
            if len({i, j, k, m}) < 4:
                continue
            da = abs(angles[i] - angles[k])
            da = min(da, np.pi - da)
            if abs(da - np.pi / 2) > np.deg2rad(25):
                continue
            corners = [_line_intersection(lines[p], lines[q])
                       for p, q in ((i, k), (k, j), (j, m), (m, i))]
            if any(c is None for c in corners):
                continue
            q = np.array(corners, dtype=np.float32)
            if not cv2.isContourConvex(q.reshape(-1, 1, 2)):
                continue
            quads.append(q)
    return quads


def locate_cards(bgr: np.ndarray, max_cards: int = 1) -> list[CardQuad]:
    """Up to ``max_cards`` non-overlapping card candidates, best first, plus runners-up.

    Returns more candidates than ``max_cards`` (at most 6) so the caller can fall back
    when the best one turns out not to be a card.
    """
    h, w = bgr.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(bgr, (max(1, int(w * scale)), max(1, int(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else bgr
    # Edge thresholds are absolute: a dim photo's card edge would fall below them.
    small = stretch_contrast(small)
    sh, sw = small.shape[:2]
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    img_area = float(sh * sw)
    maps = _edge_maps(gray, small)
    # Thin edges of every map together: what a true card side must lie on.
    support_map = cv2.dilate(np.maximum.reduce(maps[:4]), np.ones((3, 3), np.uint8))
    raw: list[tuple[np.ndarray, float]] = []
    for emap in maps:
        contours, _ = cv2.findContours(emap, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            area = cv2.contourArea(cv2.convexHull(c))
            if area < MIN_AREA_FRACTION * img_area or area > 0.995 * img_area:
                continue
            quad = _fit_quad(c)
            if quad is not None:
                qarea = cv2.contourArea(quad)
                if qarea > 0:
                    raw.append((quad, min(area / qarea, qarea / area)))
    min_len = 0.12 * min(sh, sw)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(gray)
    for quad in _segment_quads(gray, min_len) + _segment_quads(clahe, min_len):
        raw.append((quad, 1.0))
    cands: list[CardQuad] = []
    margin = 0.02 * max(sh, sw)
    for quad, fill in raw:
        quad = order_corners(quad)
        err = abs(_quad_aspect(quad) - ASPECT) / ASPECT
        if err > ASPECT_TOLERANCE:
            continue
        qarea = cv2.contourArea(quad)
        if qarea < MIN_AREA_FRACTION * img_area:
            continue
        # Corners must be (nearly) inside the photo.
        if (quad[:, 0].min() < -margin or quad[:, 1].min() < -margin
                or quad[:, 0].max() > sw + margin or quad[:, 1].max() > sh + margin):
            continue
        support = _support(support_map, quad)
        score = (
            0.45 * support
            + 0.2 * (1 - err / ASPECT_TOLERANCE)
            + 0.15 * fill
            + 0.2 * min(qarea / img_area, 1) ** 0.5
        )
        cands.append(CardQuad(quad / scale, float(score)))
    kept = _non_max_suppress(cands, limit=max(6, max_cards))
    return _nested_card_first(kept, small, scale)


def _nested_card_first(cands: list[CardQuad], small: np.ndarray, scale: float) -> list[CardQuad]:
    """The candidates with a card nested in a card-shaped frame (a screen, a sheet, or a
    quad along their edges) moved before that frame; see NESTED_*."""
    lab = None
    for i, outer in enumerate(cands):
        for j in range(i + 1, len(cands)):
            inner = cands[j]
            inter, _ = cv2.intersectConvexConvex(outer.corners, inner.corners)
            if (inter < NESTED_INSIDE * inner.area
                    or not NESTED_AREA[0] <= inner.area / outer.area <= NESTED_AREA[1]
                    or inner.score < outer.score - NESTED_SCORE_DROP):
                continue
            q = inner.corners
            sides = [float(np.linalg.norm(q[(k + 1) % 4] - q[k])) for k in range(4)]
            if min(sides[0], sides[2]) < NESTED_SIDE_RATIO * max(sides[0], sides[2]) or \
                    min(sides[1], sides[3]) < NESTED_SIDE_RATIO * max(sides[1], sides[3]):
                continue
            contour = outer.corners.reshape(-1, 1, 2)
            clear = sum(
                cv2.pointPolygonTest(contour, tuple(float(v) for v in (q[k] + q[(k + 1) % 4]) / 2),
                                     True) > NESTED_CLEAR * min(sides)
                for k in range(4))
            if clear < 2:
                continue
            if lab is None:
                lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32)
            if _rim_contrast(lab, outer.corners * scale, q * scale) < NESTED_COLOUR:
                continue  # the outer quad is the card, the inner one a part of it
            return [*cands[:i], inner, *cands[i:j], *cands[j + 1:]]
    return cands


def _rim_contrast(lab: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> float:
    """Lab distance between the median colour just inside ``inner`` (a card's paper) and
    that of ``outer`` outside ``inner`` (a screen's or a sheet's content)."""
    h, w = lab.shape[:2]
    mo = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mo, np.round(outer).astype(np.int32), 1)
    mi = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mi, np.round(inner).astype(np.int32), 1)
    short = min(float(np.linalg.norm(inner[1] - inner[2])),
                float(np.linalg.norm(inner[0] - inner[3])))
    k = np.ones((max(3, int(0.06 * short)) | 1,) * 2, np.uint8)
    around = (mo > 0) & (cv2.dilate(mi, k) == 0)
    rim = (mi > 0) & (cv2.erode(mi, k) == 0)
    if around.sum() < 50 or rim.sum() < 50:
        return 0.0
    return float(np.linalg.norm(np.median(lab[around], axis=0) - np.median(lab[rim], axis=0)))


def _overlap(a: CardQuad, b: CardQuad) -> float:
    inter, _ = cv2.intersectConvexConvex(a.corners, b.corners)
    return float(inter) / max(1e-6, min(a.area, b.area))


def _non_max_suppress(cands: list[CardQuad], limit: int) -> list[CardQuad]:
    # Among near-duplicate quads (several maps find the same card), keep the best
    # scored; a card-sized quad inside a bigger one is kept, since a card lying on a
    # larger light rectangle (a sheet of paper) is common.
    cands = sorted(cands, key=lambda q: q.score, reverse=True)
    kept: list[CardQuad] = []
    for q in cands:
        dup = False
        for k in kept:
            ov = _overlap(q, k)
            ratio = min(q.area, k.area) / max(q.area, k.area)
            if ov > 0.85 and ratio > 0.8:
                dup = True
                break
        if not dup:
            kept.append(q)
        if len(kept) >= limit:
            break
    return kept
