"""Photograph rendered cards: place them in a scene and degrade like a phone camera.

:func:`photograph` composites one or more BGRA cards (from :mod:`synthcard.render`) on
a background with rotation, perspective, lighting, blur, glare, noise and JPEG, and
returns the photo with the exact corner positions of each card.  :func:`make_photo`
wraps identity + rendering + photographing behind a seed and a named preset.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from . import fonts as F
from .identity import Identity, random_identity
from .render import CARD_H_MM, CARD_W_MM, render_back, render_front, rounded_alpha

__all__ = ["PRESETS", "Case", "Photo", "make_photo", "photograph", "sample_preset"]

CARD_ASPECT = CARD_W_MM / CARD_H_MM


@dataclass
class Photo:
    image: np.ndarray  # BGR uint8, after JPEG round trip when jpeg_quality is set
    quads: list[np.ndarray]  # per card: 4x2 float (TL, TR, BR, BL of the card itself)
    params: dict[str, Any]
    encoded: bytes | None = None  # the JPEG bytes when jpeg_quality was set
    # per card: 3x3 map from card pixel-edge coordinates to photo pixel-edge coordinates
    homographies: list[np.ndarray] = field(default_factory=list)


@dataclass
class Case:
    image: np.ndarray  # BGR uint8, exactly what ``image_bytes`` decodes to
    image_bytes: bytes  # JPEG (or PNG when the preset sets no JPEG quality)
    quads: list[np.ndarray]
    identity: Identity
    side: str
    expected: dict[str, Any]
    preset: str
    params: dict[str, Any]
    # field -> 4 corner points (TL, TR, BR, BL) of its ink box in photo pixels, keyed
    # like the vendor's text_location (per side for double_side).
    text_locations: dict[str, Any] = field(default_factory=dict)
    portrait_location: list[list[float]] | None = None  # front only
    # alert -> whether the photo should raise it (see synthcard.alerts); an alert that
    # is absent is undetermined for this photo. Empty for the plain presets.
    labels: dict[str, bool] = field(default_factory=dict)


# --------------------------------------------------------------------------- geometry


def _apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = np.hstack([p, np.ones((len(p), 1))]) @ h.T
    return q[:, :2] / q[:, 2:3]


def _aspect(quad: np.ndarray) -> float:
    top, bottom = np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3])
    left, right = np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])
    return float((top + bottom) / max(1e-9, left + right))


def _poly_area(q: np.ndarray) -> float:
    x, y = q[:, 0], q[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _rect(w: float, h: float) -> np.ndarray:
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def _rot(deg: float, cx: float, cy: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]])


def _layout(rng: np.random.Generator, sizes: list[tuple[int, int]]
            ) -> tuple[list[np.ndarray], str]:
    """Homographies placing each card in a common plane, without overlaps."""
    if len(sizes) == 1:
        return [np.eye(3)], "single"
    arrangement = "side_by_side" if rng.random() < 0.5 else "stacked"
    for _ in range(50):
        hs: list[np.ndarray] = []
        quads: list[np.ndarray] = []
        ox = oy = 0.0
        for w, h in sizes:
            m = _rot(rng.uniform(-4, 4), w / 2, h / 2)
            m = np.array([[1, 0, ox + rng.uniform(-0.04, 0.04) * w],
                          [0, 1, oy + rng.uniform(-0.06, 0.06) * h], [0, 0, 1]]) @ m
            hs.append(m)
            quads.append(_apply_h(m, _rect(w, h)))
            gap = rng.uniform(0.06, 0.3)
            if arrangement == "side_by_side":
                ox += w * (1 + gap)
            else:
                oy += h * (1 + gap)
        ok = True
        for i in range(len(quads)):
            for j in range(i + 1, len(quads)):
                area, _ = cv2.intersectConvexConvex(quads[i].astype(np.float32),
                                                    quads[j].astype(np.float32))
                if area > 0:
                    ok = False
        if ok:
            return hs, arrangement
    raise RuntimeError("could not lay out the cards without overlap")


def _perspective(rng: np.random.Generator, group: np.ndarray, amount: float,
                 card_quads: list[np.ndarray]) -> np.ndarray:
    """A homography moving the group's corners by up to ``amount`` of its size."""
    if amount <= 0:
        return np.eye(3)
    x0, y0 = group.min(0)
    x1, y1 = group.max(0)
    src = _rect(x1 - x0, y1 - y0) + [x0, y0]
    size = np.array([x1 - x0, y1 - y0])
    best = np.eye(3)
    for attempt in range(40):
        a = amount * (1 - attempt / 60)
        dst = src + rng.uniform(-a, a, (4, 2)) * size
        h = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        ok = all(abs(_aspect(_apply_h(h, q)) / _aspect(q) - 1) <= 0.09 for q in card_quads)
        if ok:
            return h
    return best


# --------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1] (float32), from a small grid upsampled."""
    gw = max(2, cells)
    gh = max(2, round(cells * h / max(1, w)))
    small = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    palette = [(200, 200, 200), (60, 60, 65), (235, 230, 220), (120, 90, 60), (30, 30, 30),
               (180, 200, 215), (90, 110, 80), (150, 40, 40), (250, 250, 250), (200, 180, 150)]
    base = np.array(palette[int(rng.integers(len(palette)))], np.float32)
    base = np.clip(base + rng.uniform(-20, 20, 3), 0, 255)
    sh, sw = max(2, h // 16), max(2, w // 16)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    g = (xx / sw - 0.5) * math.cos(ang) + (yy / sh - 0.5) * math.sin(ang)
    small = base[None, None] * (1 + g[..., None] * rng.uniform(0.05, 0.4))
    img = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    return img


def _texture(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    kind = str(rng.choice(["wood", "fabric", "marble"]))
    # Work at half resolution: these patterns are smooth enough.
    sh, sw = max(2, h // 2), max(2, w // 2)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    if kind == "wood":
        ang = rng.uniform(-0.3, 0.3) + (math.pi / 2 if rng.random() < 0.5 else 0)
        u = xx * math.cos(ang) + yy * math.sin(ang)
        v = -xx * math.sin(ang) + yy * math.cos(ang)
        turb = _smooth_noise(rng, sh, sw, 6) * rng.uniform(8, 25)
        grain = np.sin((v + turb * 3 + 0.02 * u) * 2 * math.pi / rng.uniform(12, 40))
        fine = _smooth_noise(rng, sh, sw, 200) * 0.3
        t = 0.5 + 0.35 * grain + fine
        dark = np.array([rng.uniform(30, 60), rng.uniform(50, 90), rng.uniform(90, 140)])
        light = dark + np.array([rng.uniform(40, 70), rng.uniform(50, 80), rng.uniform(60, 90)])
    elif kind == "fabric":
        f = 2 * math.pi / rng.uniform(3, 7)
        weave = np.sin(xx * f) * np.sin(yy * f)
        t = 0.5 + 0.15 * weave + 0.25 * _smooth_noise(rng, sh, sw, max(2, sw // 3))
        t += 0.15 * _smooth_noise(rng, sh, sw, 8)
        dark = rng.uniform(20, 120, 3)
        light = np.clip(dark + rng.uniform(30, 70), 0, 255)
    else:
        turb = _smooth_noise(rng, sh, sw, 5) * 4 + _smooth_noise(rng, sh, sw, 17) * 1.5
        veins = np.abs(np.sin((xx + yy * rng.uniform(-1, 1)) / sw * rng.uniform(4, 9) + turb))
        t = 0.85 + 0.15 * np.sqrt(veins) + 0.03 * _smooth_noise(rng, sh, sw, 60)
        light = rng.uniform(215, 250, 3)
        dark = light - rng.uniform(70, 120)
    t = np.clip(t, 0, 1)[..., None]
    small = dark[None, None] * (1 - t) + light[None, None] * t
    img = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    return img, kind


_CLUTTER_ZH = ("会议纪要", "收据", "发票联", "快递单", "购物清单", "通知", "合同", "会员卡",
               "工作证", "图书馆借阅证", "交通卡", "优惠券", "菜单", "课程表", "备忘录",
               "谢谢惠顾", "欢迎光临", "营业时间", "联系电话", "地址", "日期", "金额合计",
               "北京", "上海", "早上好", "学习资料", "第三章", "注意事项")  # fmt: skip
_CLUTTER_EN = ("RECEIPT", "Total", "Thank you", "MEMBER CARD", "Invoice No.", "Meeting notes",
               "TODO", "Coffee", "Library", "Ticket", "Boarding pass", "VISA", "Page 3",
               "Lorem ipsum dolor sit amet", "Hello world", "Qty 2", "SALE", "Open 9-18")


def _random_text(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        s = str(rng.choice(_CLUTTER_ZH))
    else:
        s = str(rng.choice(_CLUTTER_EN))
    if rng.random() < 0.4:
        s += " " + str(int(rng.integers(1, 10000)))
    return s


def _other_card(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A BGRA card that is not an ID card (bank / member / transit card)."""
    col = rng.uniform(30, 230, 3)
    col2 = np.clip(col + rng.uniform(-60, 60, 3), 0, 255)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    img = (col[None, None] * (1 - t) + col2[None, None] * t).repeat(h, 0)
    bgr = np.clip(img, 0, 255).astype(np.uint8)
    pil = Image.fromarray(bgr[..., ::-1].copy())
    d = ImageDraw.Draw(pil)
    ink = (255, 255, 255) if col.mean() < 140 else (20, 20, 20)
    fam = F.CJK_FAMILIES["noto_sans"][int(rng.integers(2))]
    title = str(rng.choice(["银行卡", "会员卡", "VIP CARD", "交通卡", "工作证", "学生证",
                            "积分卡", "GIFT CARD", "BANK"]))
    d.text((w * 0.08, h * 0.1), title, font=F.font(fam, max(8, int(h * 0.13))), fill=ink)
    digits = " ".join(f"{int(rng.integers(0, 10000)):04d}" for _ in range(4))
    latin = F.LATIN_FAMILIES["dejavu_sans"][0]
    d.text((w * 0.08, h * 0.58), digits, font=F.font(latin, max(8, int(h * 0.1))), fill=ink)
    if rng.random() < 0.6:  # chip
        d.rounded_rectangle([w * 0.1, h * 0.33, w * 0.25, h * 0.5], radius=h * 0.03,
                            fill=(210, 180, 90))
    out = np.empty((h, w, 4), np.uint8)
    out[..., :3] = np.asarray(pil)[..., ::-1]
    out[..., 3] = rounded_alpha(h, w, max(2.0, h * 0.06))
    return out


def _premultiply(bgra: np.ndarray) -> np.ndarray:
    """BGRA with colour multiplied by alpha, so that warping does not bleed dark edges."""
    out = bgra.copy()
    part = bgra[..., 3] < 255  # only the rounded corners and edges need the work
    if part.any():
        a = bgra[..., 3][part].astype(np.uint16)[:, None]
        out[..., :3][part] = ((bgra[..., :3][part].astype(np.uint16) * a + 127) // 255).astype(
            np.uint8)
    return out


def _paste(dst: np.ndarray, src_bgra: np.ndarray, m: np.ndarray) -> None:
    """Alpha-composite a BGRA patch through a projective map (in place).

    ``m`` maps source pixel centres to destination pixel centres (OpenCV convention).
    """
    h, w = dst.shape[:2]
    m3 = m if m.shape == (3, 3) else np.vstack([m, [0, 0, 1]])
    quad = _apply_h(m3, _rect(src_bgra.shape[1], src_bgra.shape[0]))
    x0, y0 = np.floor(quad.min(0)).astype(int) - 2
    x1, y1 = np.ceil(quad.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    t = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ m3
    warped = cv2.warpPerspective(_premultiply(src_bgra), t, (x1 - x0, y1 - y0),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    inv = 255 - warped[..., 3]
    roi = dst[y0:y1, x0:x1]
    kept = cv2.multiply(roi, cv2.merge([inv, inv, inv]), scale=1 / 255.0)
    dst[y0:y1, x0:x1] = cv2.add(kept, np.ascontiguousarray(warped[..., :3]))


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    s = min(h, w)
    for _ in range(int(rng.integers(6, 16))):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rw, rh = rng.uniform(0.05, 0.35) * s, rng.uniform(0.05, 0.35) * s
            box = cv2.boxPoints(((cx, cy), (rw, rh), rng.uniform(0, 180)))
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], col, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(rng.uniform(0.02, 0.15) * s), col, -1 if rng.random() < 0.6 else
                       int(rng.integers(2, 8)), cv2.LINE_AA)
        else:
            p = rng.uniform(0, 1, (2, 2)) * [w, h]
            cv2.line(img, tuple(p[0].astype(int)), tuple(p[1].astype(int)), col,
                     int(rng.integers(1, 10)), cv2.LINE_AA)
    # Other, non-ID cards lying around.
    for _ in range(int(rng.integers(1, 4))):
        cw = int(rng.uniform(0.25, 0.45) * s)
        ch = int(cw / 1.586)
        card = _other_card(rng, cw, ch)
        m = _rot(rng.uniform(0, 360), cw / 2, ch / 2)
        m[:2, 2] += [rng.uniform(-0.2, 1.0) * w - cw / 2, rng.uniform(-0.2, 1.0) * h - ch / 2]
        _paste(img, card, m)
    # Text snippets.
    pil = Image.fromarray(img[..., ::-1].copy())
    d = ImageDraw.Draw(pil)
    cjk = F.available(F.CJK_FAMILIES)
    for _ in range(int(rng.integers(3, 10))):
        text = _random_text(rng)
        fam = F.CJK_FAMILIES[cjk[int(rng.integers(len(cjk)))]][0]
        size = int(rng.uniform(0.02, 0.06) * s)
        ink = tuple(int(c) for c in rng.integers(0, 256, 3))
        d.text((rng.uniform(-0.1, 0.9) * w, rng.uniform(0, 0.95) * h), text,
               font=F.font(fam, size), fill=ink)
    img[:] = np.asarray(pil)[..., ::-1]


def _background(rng: np.random.Generator, kind: str, h: int, w: int) -> tuple[np.ndarray, str]:
    if kind == "random":
        kind = str(rng.choice(["plain", "texture", "clutter"], p=[0.4, 0.4, 0.2]))
    if kind == "plain":
        return _plain(rng, h, w), "plain"
    if kind == "texture":
        img, sub = _texture(rng, h, w)
        return img, f"texture:{sub}"
    if kind == "clutter":
        img, sub = (_plain(rng, h, w), "plain") if rng.random() < 0.5 else _texture(rng, h, w)
        _clutter(rng, img)
        return img, f"clutter:{sub}"
    raise ValueError(f"unknown background {kind!r}")


# --------------------------------------------------------------------------- photometric


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cv2.line(k, (int(round(c - dx * c)), int(round(c - dy * c))),
             (int(round(c + dx * c)), int(round(c + dy * c))), 1.0, 1, cv2.LINE_AA)
    return k / max(1e-6, k.sum())


def _ramp(rng: np.random.Generator, h: int, w: int, softness: float) -> np.ndarray:
    """A smooth 0..1 step across the image along a random direction (small, upsampled)."""
    sh, sw = max(2, h // 8), max(2, w // 8)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    d = (xx / sw - 0.5) * math.cos(ang) + (yy / sh - 0.5) * math.sin(ang)
    d -= rng.uniform(-0.25, 0.25)
    r = 1 / (1 + np.exp(-d / softness))
    return cv2.resize(r.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- photograph


def photograph(
    cards: list[np.ndarray],
    rng: np.random.Generator,
    *,
    rotation: float | None = None,
    perspective: float = 0.0,
    coverage: float | tuple[float, float] = (0.45, 0.8),
    background: str = "random",
    brightness: float = 1.0,
    gamma: float = 1.0,
    low_light: bool = False,
    shadow: float = 0.0,
    blur_sigma: float = 0.0,
    motion_blur: int = 0,
    glare: float = 0.0,
    jpeg_quality: int | None = None,
    noise_sigma: float = 0.0,
    color_cast: float = 0.0,
    out_size: int | None = None,
) -> Photo:
    """Place BGRA ``cards`` in a photo and degrade it; see the module docstring.

    - rotation: degrees, counter-clockwise as seen in the photo (None = 0).
    - perspective: corner displacement as a fraction of the card size; the card's
      aspect ratio stays within 10 %.
    - coverage: fraction of the image area covered by the card(s), a value or a
      (lo, hi) range; clamped so every card stays whole inside the frame with a margin.
    - brightness, gamma: exposure gain and tone curve; low_light adds a colour shift.
    - shadow: strength of a soft gradient across the photo (part of it darker;
      negative values make part of it brighter).
    - blur_sigma, motion_blur: Gaussian defocus sigma and motion kernel length (px).
    - glare: strength of an additive bright ellipse on the card(s).
    - noise_sigma: sensor noise in grey levels; color_cast: white-balance error.
    - jpeg_quality: JPEG round trip (None = none); out_size: longest side in pixels
      (random 1000..2000 if None).
    """
    if not cards:
        raise ValueError("no cards to photograph")
    rotation = 0.0 if rotation is None else float(rotation)
    cov = float(rng.uniform(*coverage)) if isinstance(coverage, tuple) else float(coverage)
    long_side = int(out_size) if out_size else int(rng.integers(1000, 2001))

    sizes = [(c.shape[1], c.shape[0]) for c in cards]
    place, arrangement = _layout(rng, sizes)
    local = [_apply_h(m, _rect(w, h)) for m, (w, h) in zip(place, sizes, strict=True)]
    group = np.vstack(local)
    hp = _perspective(rng, group, perspective, local)
    gc = _apply_h(hp, group).mean(0)
    # Image y points down, so a positive (counter-clockwise) angle is a negative matrix angle.
    hr = _rot(-rotation, gc[0], gc[1]) @ hp
    unit = [_apply_h(hr, q) for q in local]
    allp = np.vstack(unit)
    bw, bh = allp.max(0) - allp.min(0)
    area1 = sum(_poly_area(q) for q in unit)

    # Orientation of the frame: usually like the card's bounding box.
    ratios = [4 / 3, 3 / 2, 16 / 9, 1.0]
    r = ratios[int(rng.choice(len(ratios), p=[0.45, 0.2, 0.25, 0.1]))]
    landscape = bw >= bh
    if cov < 0.5 and rng.random() < 0.25:
        landscape = not landscape
    W, H = (long_side, round(long_side / r)) if landscape else (round(long_side / r), long_side)
    margin = max(8.0, 0.03 * min(W, H))
    s_fit = min((W - 2 * margin) / bw, (H - 2 * margin) / bh)
    s_target = math.sqrt(cov * W * H / area1)
    s = min(s_fit, s_target)
    lo = allp.min(0) * s
    hi = allp.max(0) * s
    slack = np.maximum(0.0, np.array([W, H]) - 2 * margin - (hi - lo))
    tx, ty = margin - lo + rng.uniform(0, 1, 2) * slack
    hg = np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]]) @ hr

    img, bg_kind = _background(rng, background, H, W)

    # Soft contact shadow under the cards (smooth: computed at quarter resolution).
    quads: list[np.ndarray] = []
    qh, qw = max(2, H // 4), max(2, W // 4)
    shadow_mask = np.zeros((qh, qw), np.float32)
    off = rng.uniform(-0.006, 0.012, 2) * max(W, H)
    for m, (w, h) in zip(place, sizes, strict=True):
        q = (_apply_h(hg @ m, _rect(w, h)) + off) / 4
        cv2.fillPoly(shadow_mask, [np.round(q * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    shadow_mask = cv2.GaussianBlur(shadow_mask, (0, 0), 0.002 * max(W, H) + 0.5)
    depth = rng.uniform(0.15, 0.45)
    factor = cv2.resize(1 - depth * shadow_mask, (W, H), interpolation=cv2.INTER_LINEAR)
    img = cv2.multiply(img, cv2.merge([factor, factor, factor]), dtype=cv2.CV_8U)

    for card, m, (w, h) in zip(cards, place, sizes, strict=True):
        full = hg @ m  # card pixel edges -> photo pixel edges
        q_edge = _apply_h(full, _rect(w, h))
        # Pre-shrink with area averaging: warping alone would alias the fine print.
        lens = [np.linalg.norm(q_edge[i] - q_edge[(i + 1) % 4]) for i in range(4)]
        f = max(lens[0], lens[2]) / w
        src = card
        sx = sy = 1.0
        if f < 0.9:
            nw, nh = max(8, round(w * f * 1.1)), max(8, round(h * f * 1.1))
            src = cv2.resize(card, (nw, nh), interpolation=cv2.INTER_AREA)
            sx, sy = w / nw, h / nh
        edge_map = full @ np.diag([sx, sy, 1.0])
        # OpenCV maps pixel centres: shift by half a pixel on both sides.
        half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        unhalf = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
        _paste(img, src, unhalf @ edge_map @ half)
        quads.append(q_edge - 0.5)

    # Lighting, as smooth maps computed small and upsampled: a multiplicative one
    # (shadow gradient, exposure, colour cast, warm/cold low light) and an additive glare.
    sh, sw = max(2, H // 8), max(2, W // 8)
    gains = np.full(3, brightness, np.float32)
    if color_cast > 0:
        gains *= (1 + rng.uniform(-color_cast, color_cast, 3)).astype(np.float32)
    if low_light:
        gains *= (np.array([0.85, 0.95, 1.05], np.float32) if rng.random() < 0.5 else
                  np.array([1.05, 1.0, 0.9], np.float32))
    mul = np.ones((sh, sw, 3), np.float32) * gains
    if shadow > 0:
        mul *= (1 - shadow * _ramp(rng, sh, sw, rng.uniform(0.03, 0.2)))[..., None]
    add = None
    if glare > 0:
        allq = np.vstack(quads)
        c = allq[int(rng.integers(len(allq)))] * 0.35 + allq.mean(0) * 0.65
        c += rng.uniform(-0.15, 0.15, 2) * (allq.max(0) - allq.min(0))
        ax = rng.uniform(0.06, 0.18) * max(W, H)
        ay = ax * rng.uniform(0.4, 1.0)
        ang = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
        dx, dy = (xx + 0.5) * W / sw - c[0], (yy + 0.5) * H / sh - c[1]
        u = (dx * math.cos(ang) + dy * math.sin(ang)) / ax
        v = (-dx * math.sin(ang) + dy * math.cos(ang)) / ay
        g = np.exp(-(u * u + v * v) * 1.5).astype(np.float32)
        add = np.repeat((glare * 1.3 * 255 * brightness * g)[..., None], 3, axis=2)
    if not (np.allclose(mul, 1.0) and add is None):
        f32 = img.astype(np.float32)
        cv2.multiply(f32, cv2.resize(mul, (W, H), interpolation=cv2.INTER_LINEAR), f32)
        if add is not None:
            cv2.add(f32, cv2.resize(add, (W, H), interpolation=cv2.INTER_LINEAR), f32)
        img = cv2.convertScaleAbs(f32)  # rounds and saturates to 0..255
    if gamma != 1.0:
        lut = np.clip(255 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
        img = cv2.LUT(img, lut)

    # Optics: defocus and hand shake.
    if blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    motion_angle = float(rng.uniform(0, 180))
    if motion_blur and motion_blur >= 2:
        img = cv2.filter2D(img, -1, _motion_kernel(int(motion_blur), motion_angle))

    # Sensor noise: per-pixel luminance noise plus coarser chroma noise.
    if noise_sigma > 0:
        # Sum of two uniform bytes: near-Gaussian, and far cheaper than normal() per pixel.
        u = rng.integers(0, 256, (2, H, W), dtype=np.uint8).astype(np.int16)
        n = (u[0] + u[1] - 255).astype(np.float32) * (noise_sigma / 104.4)
        cn = rng.normal(0, noise_sigma * 0.5, (max(2, H // 4), max(2, W // 4), 3))
        cn = cv2.resize(cn.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        cv2.add(cn, cv2.merge([n, n, n]), cn)
        f32 = img.astype(np.float32)
        cv2.add(f32, cn, f32)
        img = cv2.convertScaleAbs(f32)

    encoded = None
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        encoded = buf.tobytes()
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)

    covered = sum(_poly_area(q) for q in quads) / (W * H)
    params = {
        "size": [W, H],
        "rotation": rotation,
        "perspective": float(perspective),
        "coverage_requested": cov,
        "coverage": round(covered, 4),
        "background": bg_kind,
        "arrangement": arrangement,
        "brightness": float(brightness),
        "gamma": float(gamma),
        "low_light": bool(low_light),
        "shadow": float(shadow),
        "blur_sigma": float(blur_sigma),
        "motion_blur": int(motion_blur),
        "glare": float(glare),
        "noise_sigma": float(noise_sigma),
        "color_cast": float(color_cast),
        "jpeg_quality": None if jpeg_quality is None else int(jpeg_quality),
    }
    return Photo(image=img, quads=quads, params=params, encoded=encoded,
                 homographies=[hg @ m for m in place])


# --------------------------------------------------------------------------- presets

_MILD: dict[str, Any] = {
    "rotation": (-8.0, 8.0),
    "perspective": (0.0, 0.025),
    "coverage": (0.4, 0.85),
    "background": ["plain", "texture"],
    "brightness": (0.85, 1.1),
    "gamma": (0.9, 1.15),
    "shadow": (-0.15, 0.25),  # negative: one side brighter
    "color_cast": (0.0, 0.06),
    "blur_sigma": (0.0, 0.8),
    "noise_sigma": (0.0, 3.0),
    "jpeg_quality": (75, 95),
}

# Each value is a constant, a (lo, hi) range (ints: inclusive integers) or a list to
# choose from; :func:`sample_preset` turns a preset into photograph() keyword arguments.
PRESETS: dict[str, dict[str, Any]] = {
    "clean": {
        "rotation": 0.0, "perspective": 0.0, "coverage": (0.5, 0.85), "background": "plain",
        "jpeg_quality": 95,
    },
    "mild": dict(_MILD),
    "rotated": {**_MILD, "rotation": (0.0, 360.0)},
    "perspective": {**_MILD, "perspective": (0.04, 0.09), "rotation": (-20.0, 20.0)},
    "cluttered": {**_MILD, "background": "clutter", "coverage": (0.3, 0.6)},
    "lowlight": {**_MILD, "brightness": (0.35, 0.6), "gamma": (1.3, 1.8), "low_light": True,
                 "noise_sigma": (4.0, 10.0), "jpeg_quality": (70, 90)},
    "glare_mild": {**_MILD, "glare": (0.3, 0.6)},
    "blur_mild": {**_MILD, "blur_sigma": (1.0, 2.0), "motion_blur": [0, 0, 5, 7, 9]},
    "small": {**_MILD, "coverage": (0.25, 0.35)},
}  # fmt: skip


def sample_preset(preset: str | dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Draw concrete photograph() keyword arguments from a preset."""
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k == "coverage":
            out[k] = v  # photograph() samples the range itself
        elif isinstance(v, tuple):
            lo, hi = v
            if isinstance(lo, int) and isinstance(hi, int):
                out[k] = int(rng.integers(lo, hi + 1))
            else:
                out[k] = float(rng.uniform(lo, hi))
        elif isinstance(v, list):
            out[k] = v[int(rng.integers(len(v)))]
        else:
            out[k] = v
    return out


_SIDES = ("front", "back", "double_side")

_FRONT_KEYS = ("name", "sex", "ethnicity", "birth", "address", "number")
_BACK_KEYS = ("issue", "valid_from", "valid_to")


def _box_quad(m: np.ndarray, box) -> list[list[float]]:
    x0, y0, x1, y1 = box
    q = _apply_h(m, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)) - 0.5
    return [[round(float(x), 1), round(float(y), 1)] for x, y in q]


def make_photo(seed: int, preset: str, side: str = "front") -> Case:
    """One reproducible test case: the same (seed, preset, side) gives the same bytes."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if side not in _SIDES:
        raise ValueError(f"side must be one of {_SIDES}")
    # Independent streams: the identity depends on the seed only, so one seed gives the
    # same person in every preset and side; crc32 is stable across processes.
    ident = random_identity(np.random.default_rng([seed, 0]))
    tag = zlib.crc32(f"{preset}/{side}".encode())
    rng = np.random.default_rng([seed, 1, tag])

    layouts: list[dict] = []
    cards: list[np.ndarray] = []
    faces = ["front", "back"] if side == "double_side" else [side]
    for face in faces:
        lay: dict = {}
        fn = render_front if face == "front" else render_back
        cards.append(fn(ident, rng, layout=lay))
        layouts.append(lay)
    kwargs = sample_preset(preset, rng)
    photo = photograph(cards, rng, **kwargs)

    if photo.encoded is not None:
        data = photo.encoded
        image = photo.image
    else:
        ok, buf = cv2.imencode(".png", photo.image)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        data, image = buf.tobytes(), photo.image

    locs: dict[str, Any] = {}
    portrait = None
    for face, lay, m in zip(faces, layouts, photo.homographies, strict=True):
        boxes = lay["boxes"]
        keys = _FRONT_KEYS if face == "front" else _BACK_KEYS
        d = {k: _box_quad(m, boxes[k]) for k in keys}
        if face == "front":
            portrait = _box_quad(m, boxes["portrait"])
        if side == "double_side":
            locs[face] = d
        else:
            locs = d
    params = dict(photo.params)
    params["fonts"] = {face: lay["fonts"] for face, lay in zip(faces, layouts, strict=True)}

    if side == "double_side":
        expected: dict[str, Any] = {"front": ident.to_vendor_fields("front"),
                                    "back": ident.to_vendor_fields("back")}
    else:
        expected = ident.to_vendor_fields(side)
    return Case(image=image, image_bytes=data, quads=photo.quads, identity=ident, side=side,
                expected=expected, preset=preset, params=params, text_locations=locs,
                portrait_location=portrait)
