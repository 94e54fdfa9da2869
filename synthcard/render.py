"""Render the front and back of a synthetic second-generation resident ID card.

The card is drawn flat, at ``10 * scale`` pixels per millimetre (85.6 x 54 mm), as a
BGRA image whose alpha channel cuts the rounded corners.  Positions follow the real
layout (millimetres from the card's top-left corner) with random jitter on every block,
random fonts, colours and background patterns, so that an engine tuned on these images
is not tuned to one exact rendering.

Every random choice comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import cv2
import numpy as np
from PIL import Image, ImageDraw

from . import fonts as F
from .identity import Identity

__all__ = ["CARD_H_MM", "CARD_W_MM", "render_back", "render_front", "render_interim"]

CARD_W_MM = 85.6
CARD_H_MM = 54.0
CORNER_MM = 3.0
JITTER_MM = 0.6
SIZE_JITTER = 0.05

# Weights of the CJK families (UKai rarely: real cards never use a brush script).
_CJK_WEIGHTS = {"noto_sans": 0.28, "noto_serif": 0.17, "wqy_microhei": 0.15,
                "wqy_zenhei": 0.15, "uming": 0.19, "ukai": 0.06}  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = [k for k in weights if k in _available_cjk()]
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


_AVAILABLE: dict[str, list[str]] = {}


def _available_cjk() -> list[str]:
    if "cjk" not in _AVAILABLE:
        found = F.available(F.CJK_FAMILIES)
        if not found:
            raise RuntimeError("no CJK font installed (need e.g. Noto Sans CJK)")
        _AVAILABLE["cjk"] = found
    return _AVAILABLE["cjk"]


def _available_mono() -> list[str]:
    if "mono" not in _AVAILABLE:
        _AVAILABLE["mono"] = F.available(F.MONO_FAMILIES) or ["noto_mono_cjk"]
    return _AVAILABLE["mono"]


def _jit(rng: np.random.Generator, amount: float = JITTER_MM) -> float:
    return float(rng.uniform(-amount, amount))


def _sz(rng: np.random.Generator) -> float:
    return float(1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))


def _clip_rgb(c) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(v), 0, 255)) for v in c)  # type: ignore[return-value]


def _is_wide(ch: str) -> bool:
    return ord(ch) >= 0x2E80 and ch != "·"


@dataclass
class _Style:
    """The per-card typographic choices."""

    face: F.FontFace
    bold: bool
    color: tuple[int, int, int]

    def stroke(self, size_px: int) -> int:
        # Families without a bold file are emboldened with a thin stroke.
        return max(1, round(size_px / 45)) if (self.bold and self.face.fake_bold) else 0


class _Writer:
    """Draws text runs on the card and records the ink box of each field."""

    def __init__(self, img: Image.Image, ppm: float):
        self.img = img
        self.draw = ImageDraw.Draw(img)
        self.ppm = ppm
        self.boxes: dict[str, tuple[float, float, float, float]] = {}

    def run(
        self,
        key: str,
        text: str,
        style: _Style,
        x_mm: float,
        y_mm: float,
        height_mm: float,
        *,
        pitch_mm: float | None = None,
        narrow_gap_mm: float = 0.15,
        fixed_mm: float | None = None,
        ref: str = "国",
        nominal: float = 0.88,
    ) -> float:
        """Draw ``text`` starting at x, vertically centred on y; returns the end x in mm.

        Wide (CJK) characters advance by ``pitch_mm`` when given (fixed cells like the
        real card), narrow ones by their own width plus ``narrow_gap_mm``; ``fixed_mm``
        gives every character the same advance (the ID number).
        """
        ppm = self.ppm
        size = F.size_for_height(style.face, height_mm * ppm, ref=ref, nominal=nominal)
        fnt = F.font(style.face, size)
        stroke = style.stroke(size)
        rb = fnt.getbbox(ref, anchor="ls")
        baseline = y_mm * ppm - (rb[1] + rb[3]) / 2.0
        x = x_mm * ppm
        x0 = y0 = math.inf
        x1 = y1 = -math.inf
        for ch in text:
            f = fnt
            if not F.has_glyph(style.face, ch):
                f = F.font(F.FALLBACK_CJK, size)
            adv = f.getlength(ch)
            if ch != " ":
                self.draw.text((x, baseline), ch, font=f, fill=style.color, anchor="ls",
                               stroke_width=stroke, stroke_fill=style.color)
                b = f.getbbox(ch, anchor="ls", stroke_width=stroke)
                x0, y0 = min(x0, x + b[0]), min(y0, baseline + b[1])
                x1, y1 = max(x1, x + b[2]), max(y1, baseline + b[3])
            if fixed_mm is not None:
                x += fixed_mm * ppm
            elif pitch_mm is not None and _is_wide(ch):
                x += pitch_mm * ppm
            elif pitch_mm is not None:
                x += adv + narrow_gap_mm * ppm
            else:
                x += adv
        if x1 > x0:
            old = self.boxes.get(key)
            box = (x0, y0, x1, y1)
            if old is not None:
                box = (min(old[0], x0), min(old[1], y0), max(old[2], x1), max(old[3], y1))
            self.boxes[key] = box
        return x / ppm

    def spread(self, key: str, text: str, style: _Style, x_mm: float, y_mm: float,
               height_mm: float, span_mm: float, *, centre: bool = False) -> None:
        """Draw ``text`` with its characters spread so the run spans ``span_mm``."""
        n = len(text)
        pitch = (span_mm - height_mm) / max(1, n - 1)
        if centre:
            x_mm -= span_mm / 2.0
        self.run(key, text, style, x_mm, y_mm, height_mm, pitch_mm=pitch)


# --------------------------------------------------------------------------- background

_TINTS = {
    # RGB offsets subtracted from a near-white base: which channels the pattern darkens.
    "blue": (38, 22, 8),
    "green": (30, 14, 28),
    "pink": (8, 30, 22),
    "grey": (22, 22, 22),
    "beige": (8, 18, 36),
}


def _base_color(rng: np.random.Generator, tint: str) -> np.ndarray:
    off = np.array(_TINTS[tint], dtype=np.float32) * rng.uniform(0.15, 0.35)
    base = rng.uniform(238, 250) - off + rng.uniform(-2, 2, 3)
    return base.astype(np.float32)


def _low_freq(rng: np.random.Generator, h: int, w: int, base: np.ndarray, grad_amp: float,
              mottle: float) -> np.ndarray:
    """Base colour + linear gradient + faint mottling, computed small and upsampled."""
    sh, sw = max(2, h // 16), max(2, w // 16)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    g = (xx / sw - 0.5) * math.cos(ang) + (yy / sh - 0.5) * math.sin(ang)
    small = base[None, None, :] + (g * 2 * grad_amp)[..., None]
    low = rng.normal(0, 1, (7, 11, 3)).astype(np.float32)
    small += cv2.resize(low, (sw, sh), interpolation=cv2.INTER_CUBIC) * mottle
    small8 = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small8, (w, h), interpolation=cv2.INTER_LINEAR)


def _guilloche(img: np.ndarray, rng: np.random.Generator, ppm: float, color, kind: str,
               region: tuple[float, float, float, float] | None = None) -> None:
    """Draw one family of fine interleaved curves (the security print of the card)."""
    h, w = img.shape[:2]
    curves: list[np.ndarray] = []
    if kind == "wave":
        tilt = rng.uniform(-0.35, 0.35)
        lam = rng.uniform(8, 28) * ppm
        amp = rng.uniform(0.8, 4.0) * ppm
        lam2, amp2 = rng.uniform(3, 9) * ppm, rng.uniform(0.0, 0.8) * ppm
        spacing = rng.uniform(0.7, 1.8) * ppm
        dphi = rng.uniform(0.05, 0.5)
        phi, phi2 = rng.uniform(0, 2 * math.pi, 2)
        xs = np.linspace(-0.15 * w, 1.15 * w, 260)
        cx, cy = w / 2, h / 2
        c, s = math.cos(tilt), math.sin(tilt)
        y_lo, y_hi = (-0.4 * h, 1.4 * h) if region is None else (region[1], region[3])
        for k, y0 in enumerate(np.arange(y_lo, y_hi, spacing)):
            ys = (y0 + amp * np.sin(2 * math.pi * xs / lam + phi + k * dphi)
                  + amp2 * np.sin(2 * math.pi * xs / lam2 + phi2))
            if region is None:
                px = cx + (xs - cx) * c - (ys - cy) * s
                py = cy + (xs - cx) * s + (ys - cy) * c
            else:
                px, py = xs, ys
            curves.append(np.stack([px, py], axis=1))
    elif kind == "rosette":
        cx = rng.uniform(0.1, 0.9) * w
        cy = rng.uniform(0.1, 0.9) * h
        petals = int(rng.integers(5, 25))
        r0, r1 = rng.uniform(2, 10) * ppm, rng.uniform(18, 45) * ppm
        spacing = rng.uniform(0.9, 2.2) * ppm
        amp = rng.uniform(0.8, 3.5) * ppm
        dphi = rng.uniform(0.03, 0.3)
        th = np.linspace(0, 2 * math.pi, 720)
        for k, rr in enumerate(np.arange(r0, r1, spacing)):
            r = rr + amp * np.sin(petals * th + k * dphi)
            curves.append(np.stack([cx + r * np.cos(th), cy + r * np.sin(th)], axis=1))
    else:  # "spiro": loops of an epitrochoid swept along a line
        y0 = rng.uniform(0.15, 0.85) * h
        loops = int(rng.integers(18, 45))
        r = rng.uniform(1.5, 4.5) * ppm
        th = np.linspace(0, 2 * math.pi * loops, loops * 60)
        xs = np.linspace(-0.05 * w, 1.05 * w, th.size)
        for k in range(int(rng.integers(2, 6))):
            off = k * rng.uniform(0.6, 1.5) * ppm
            ys = y0 + off + r * np.sin(th + k * 0.7) + 0.3 * r * np.sin(3 * th)
            curves.append(np.stack([xs + r * np.cos(th + k * 0.7), ys], axis=1))
    thick = max(1, round(ppm / 22))
    pts = [np.round(cv * 16).astype(np.int32) for cv in curves]
    cv2.polylines(img, pts, False, color, thick, cv2.LINE_AA, shift=4)


def _card_background(rng: np.random.Generator, h: int, w: int, ppm: float) -> np.ndarray:
    tint = str(rng.choice(list(_TINTS)))
    base = _base_color(rng, tint)
    img8 = _low_freq(rng, h, w, base, rng.uniform(2, 7), rng.uniform(0.5, 2.0))
    n_fam = int(rng.integers(2, 5))
    for _ in range(n_fam):
        fam_tint = tint if rng.random() < 0.6 else str(rng.choice(list(_TINTS)))
        depth = rng.uniform(0.35, 1.0)
        col = base - np.array(_TINTS[fam_tint], np.float32) * depth - rng.uniform(0, 8)
        col = np.clip(col, 195, 245)
        kind = str(rng.choice(["wave", "wave", "rosette", "spiro"]))
        _guilloche(img8, rng, ppm, _clip_rgb(col), kind)
    return img8


def rounded_alpha(h: int, w: int, radius: float) -> np.ndarray:
    """Anti-aliased alpha mask of a rounded rectangle filling the image."""
    a = np.full((h, w), 255, np.uint8)
    r = int(math.ceil(radius)) + 1
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) + 0.5
    d = np.hypot(radius - xx, radius - yy)
    corner = np.where((xx < radius) & (yy < radius), np.clip(radius - d + 0.5, 0, 1), 1.0)
    corner = (corner * 255).astype(np.uint8)
    a[:r, :r] = corner
    a[:r, w - r:] = corner[:, ::-1]
    a[h - r:, :r] = corner[::-1, :]
    a[h - r:, w - r:] = corner[::-1, ::-1]
    return a


def _finish(rgb: np.ndarray, ppm: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = rounded_alpha(h, w, CORNER_MM * ppm)
    return bgra


# --------------------------------------------------------------------------- portrait


def _portrait(rng: np.random.Generator, w: int, h: int, sex: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """A drawn (not real) head-and-shoulders photo; returns (RGB, alpha 0..1)."""
    if rng.random() < 0.65:
        bg = np.array([rng.uniform(244, 255)] * 3) + rng.uniform(-3, 3, 3)
    else:
        bg = np.array([rng.uniform(200, 225), rng.uniform(222, 240), rng.uniform(240, 255)])
    img = np.empty((h, w, 3), np.uint8)
    img[:] = _clip_rgb(bg)
    mask = np.zeros((h, w), np.uint8)

    skin = np.array([rng.uniform(200, 245), rng.uniform(150, 200), rng.uniform(120, 170)])
    skin_dark = _clip_rgb(skin * 0.85)
    skin_c = _clip_rgb(skin)
    hair = _clip_rgb(np.array([1.0, 0.9, 0.85]) * rng.uniform(15, 70))
    cloth_opts = [(30, 35, 45), (40, 40, 40), (235, 235, 235), (50, 70, 120), (120, 30, 40),
                  (70, 90, 70), (150, 150, 160)]
    cloth = np.array(cloth_opts[int(rng.integers(len(cloth_opts)))], float)
    cloth = _clip_rgb(cloth + rng.uniform(-12, 12, 3))

    cx = w * (0.5 + rng.uniform(-0.04, 0.04))
    cy = h * (0.42 + rng.uniform(-0.025, 0.025))
    a = w * rng.uniform(0.23, 0.27)  # head half-width
    b = a * rng.uniform(1.22, 1.34)  # head half-height
    female = sex == "女"
    long_hair = female and rng.random() < 0.75 or (not female and rng.random() < 0.03)

    def ell(target, c, axes, color, angle=0.0, start=0, end=360, thick=-1):
        center = (int(round(c[0] * 16)), int(round(c[1] * 16)))
        ax = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
        cv2.ellipse(target, center, ax, angle, start, end, color, thick, cv2.LINE_AA, 4)

    def both(c, axes, color, **kw):
        ell(img, c, axes, color, **kw)
        ell(mask, c, axes, 255, **kw)

    # Long hair goes behind the shoulders.
    if long_hair:
        both((cx, cy + 0.35 * b), (a * 1.25, b * 1.35), hair)
    # Shoulders and clothing.
    both((w * 0.5, h * 1.08), (w * rng.uniform(0.5, 0.62), h * rng.uniform(0.27, 0.32)), cloth)
    # Neck.
    neck = np.array([[cx - 0.42 * a, cy + 0.6 * b], [cx + 0.42 * a, cy + 0.6 * b],
                     [cx + 0.48 * a, h * 0.84], [cx - 0.48 * a, h * 0.84]])
    cv2.fillPoly(img, [np.round(neck * 16).astype(np.int32)], skin_dark, cv2.LINE_AA, 4)
    cv2.fillPoly(mask, [np.round(neck * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    if cloth[0] < 200 and rng.random() < 0.6:  # shirt collar under a jacket
        v = np.array([[cx - 0.5 * a, h * 0.8], [cx + 0.5 * a, h * 0.8], [cx, h * 0.95]])
        cv2.fillPoly(img, [np.round(v * 16).astype(np.int32)], (240, 240, 240), cv2.LINE_AA, 4)
    # Hair volume behind the head, ears, face.
    both((cx, cy - 0.16 * b), (a * 1.09, b * 0.94), hair)
    for sgn in (-1, 1):
        both((cx + sgn * a * 0.98, cy + 0.05 * b), (a * 0.16, b * 0.2), skin_dark)
    both((cx, cy), (a, b), skin_c)
    # Fringe over the forehead.
    fringe_drop = rng.uniform(0.35, 0.6)
    ell(img, (cx, cy - b * 0.62), (a * 1.02, b * fringe_drop), hair, start=180, end=360)
    ell(img, (cx + rng.uniform(-0.3, 0.3) * a, cy - b * 0.62), (a * 0.95, b * 0.2), hair)
    # Eyes, brows, nose, mouth.
    eye_y = cy - 0.02 * b
    iris = _clip_rgb(np.array([40, 30, 25]) + rng.uniform(-10, 20))
    for sgn in (-1, 1):
        ex = cx + sgn * a * 0.4
        ell(img, (ex, eye_y), (a * 0.17, b * 0.065), (245, 245, 245))
        ell(img, (ex, eye_y), (a * 0.075, b * 0.06), iris)
        ell(img, (ex, eye_y - b * 0.17), (a * 0.22, b * 0.04), hair, angle=-sgn * 6)
    if rng.random() < 0.12:  # glasses
        for sgn in (-1, 1):
            ell(img, (cx + sgn * a * 0.4, eye_y), (a * 0.27, b * 0.13), (30, 30, 30),
                thick=max(1, int(w / 150)))
    ell(img, (cx, cy + 0.22 * b), (a * 0.1, b * 0.05), _clip_rgb(skin * 0.78))
    lip = _clip_rgb(skin * np.array([0.85, 0.55, 0.55]))
    ell(img, (cx, cy + 0.5 * b), (a * 0.3, b * 0.07), lip)

    img = cv2.GaussianBlur(img, (0, 0), max(0.6, w / 500))
    noise = rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)
    img = np.clip(img.astype(np.float32) + noise, 0, 255)

    # The background fades into the card; the person stays opaque except at the box edge.
    ex = np.arange(w, dtype=np.float32)
    ey = np.arange(h, dtype=np.float32)
    edge = np.minimum(np.minimum(ex, w - 1 - ex)[None, :], np.minimum(ey, h - 1 - ey)[:, None])
    fade = rng.uniform(0.08, 0.16) * w
    bg_alpha = np.clip(edge / fade, 0, 1) * rng.uniform(0.75, 1.0)
    person = cv2.GaussianBlur(mask, (0, 0), max(0.6, w / 400)).astype(np.float32) / 255
    person *= np.clip(edge / (0.03 * w), 0, 1)
    # Clothes fade out towards the bottom instead of ending in a hard line.
    person *= np.clip((h - 1 - ey) / (rng.uniform(0.05, 0.12) * h), 0, 1)[:, None]
    alpha = np.maximum(bg_alpha, person)
    return img, alpha


# --------------------------------------------------------------------------- emblem


def _star(cx: float, cy: float, r: float, rot: float = -math.pi / 2) -> np.ndarray:
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * 0.382
        t = rot + i * math.pi / 5
        pts.append((cx + rr * math.cos(t), cy + rr * math.sin(t)))
    return np.array(pts)


def _emblem(img: np.ndarray, rng: np.random.Generator, ppm: float, x0: float, y0: float,
            size: float) -> None:
    """A stylised national emblem: red disc, gold ring, five stars, gate and cog."""
    red = _clip_rgb((rng.uniform(190, 225), rng.uniform(15, 45), rng.uniform(20, 45)))
    gold = _clip_rgb((rng.uniform(225, 250), rng.uniform(170, 200), rng.uniform(30, 70)))
    s = size * ppm
    cx, cy = (x0 + size / 2) * ppm, (y0 + size / 2) * ppm
    R = s / 2

    def poly(p, color):
        cv2.fillPoly(img, [np.round(np.asarray(p) * 16).astype(np.int32)], color,
                     cv2.LINE_AA, 4)

    def circle(c, r, color, thick=-1):
        cv2.circle(img, (int(round(c[0] * 16)), int(round(c[1] * 16))), int(round(r * 16)),
                   color, thick, cv2.LINE_AA, 4)

    circle((cx, cy), R, gold)
    circle((cx, cy), R * 0.8, red)
    # Wheat-ear ticks on the ring.
    for i in range(36):
        t = i * 2 * math.pi / 36
        p = [(cx + R * 0.83 * math.cos(t), cy + R * 0.83 * math.sin(t)),
             (cx + R * 0.97 * math.cos(t + 0.05), cy + R * 0.97 * math.sin(t + 0.05))]
        cv2.line(img, tuple(np.round(np.array(p[0]) * 16).astype(int)),
                 tuple(np.round(np.array(p[1]) * 16).astype(int)), red,
                 max(1, round(ppm / 14)), cv2.LINE_AA, 4)
    # Five stars: one big, four small in an arc.
    poly(_star(cx - R * 0.0, cy - R * 0.45, R * 0.2), gold)
    for i, ang in enumerate((-60, -25, 25, 60)):
        t = math.radians(ang - 90)
        sx, sy = cx + R * 0.5 * math.cos(t), cy - R * 0.12 + R * 0.5 * math.sin(t)
        if abs(ang) == 60:
            sy += R * 0.08
        poly(_star(sx, sy, R * 0.08, rot=t + math.pi / 2 * (1 if i < 2 else -1)), gold)
    # Gate: platform, wall with doors, two roofs.
    top = cy + R * 0.0
    poly([(cx - R * 0.55, top + R * 0.42), (cx + R * 0.55, top + R * 0.42),
          (cx + R * 0.55, top + R * 0.5), (cx - R * 0.55, top + R * 0.5)], gold)
    poly([(cx - R * 0.45, top + R * 0.18), (cx + R * 0.45, top + R * 0.18),
          (cx + R * 0.45, top + R * 0.42), (cx - R * 0.45, top + R * 0.42)], gold)
    for k in range(-2, 3):
        dx = cx + k * R * 0.17
        poly([(dx - R * 0.04, top + R * 0.42), (dx + R * 0.04, top + R * 0.42),
              (dx + R * 0.04, top + R * 0.3), (dx - R * 0.04, top + R * 0.3)], red)
    poly([(cx - R * 0.5, top + R * 0.18), (cx + R * 0.5, top + R * 0.18),
          (cx + R * 0.36, top + R * 0.08), (cx - R * 0.36, top + R * 0.08)], gold)
    poly([(cx - R * 0.3, top + R * 0.08), (cx + R * 0.3, top + R * 0.08),
          (cx + R * 0.3, top - R * 0.0), (cx - R * 0.3, top - R * 0.0)], gold)
    poly([(cx - R * 0.4, top + R * 0.0), (cx + R * 0.4, top + R * 0.0),
          (cx + R * 0.25, top - R * 0.1), (cx - R * 0.25, top - R * 0.1)], gold)
    # Cog wheel at the bottom, over the ring.
    cog_c = (cx, cy + R * 0.78)
    for i in range(12):
        t = i * 2 * math.pi / 12
        poly([(cog_c[0] + R * 0.2 * math.cos(t - 0.12), cog_c[1] + R * 0.2 * math.sin(t - 0.12)),
              (cog_c[0] + R * 0.2 * math.cos(t + 0.12), cog_c[1] + R * 0.2 * math.sin(t + 0.12)),
              (cog_c[0] + R * 0.26 * math.cos(t + 0.1), cog_c[1] + R * 0.26 * math.sin(t + 0.1)),
              (cog_c[0] + R * 0.26 * math.cos(t - 0.1), cog_c[1] + R * 0.26 * math.sin(t - 0.1))],
             gold)
    circle(cog_c, R * 0.2, gold)
    circle(cog_c, R * 0.08, red)
    # A red ribbon sweeping both sides of the cog.
    for sgn in (-1, 1):
        poly([(cx + sgn * R * 0.22, cy + R * 0.7), (cx + sgn * R * 0.62, cy + R * 0.6),
              (cx + sgn * R * 0.7, cy + R * 0.72), (cx + sgn * R * 0.25, cy + R * 0.86)], red)


def _great_wall(img: np.ndarray, rng: np.random.Generator, ppm: float) -> None:
    """A faint mountain band with a crenellated wall along its ridge (card back)."""
    h, w = img.shape[:2]
    col = np.array([rng.uniform(200, 230), rng.uniform(180, 210), rng.uniform(150, 190)])
    xs = np.linspace(0, w, 200)
    phase = rng.uniform(0, 2 * math.pi, 3)
    ridge = (rng.uniform(30, 33) * ppm
             + 2.5 * ppm * np.sin(xs / w * 2 * math.pi * rng.uniform(0.8, 1.6) + phase[0])
             + 1.2 * ppm * np.sin(xs / w * 2 * math.pi * rng.uniform(2.5, 4.5) + phase[1]))
    bottom = ridge + rng.uniform(5, 8) * ppm
    band = np.concatenate([np.stack([xs, ridge], 1), np.stack([xs[::-1], bottom[::-1]], 1)])
    overlay = img.copy()
    cv2.fillPoly(overlay, [np.round(band * 16).astype(np.int32)], _clip_rgb(col), cv2.LINE_AA, 4)
    strength = rng.uniform(0.15, 0.3)
    cv2.addWeighted(overlay, strength, img, 1 - strength, 0, dst=img)
    wall_col = _clip_rgb(np.array(img[int(h / 2), int(w / 2)], float) * 0.6 + col * 0.4 - 8)
    wall = np.stack([xs, ridge - 0.6 * ppm], 1)
    cv2.polylines(img, [np.round(wall * 16).astype(np.int32)], False, wall_col,
                  max(1, round(0.5 * ppm)), cv2.LINE_AA, 4)
    step = 1.3 * ppm
    for x in np.arange(0, w, step):
        y = float(np.interp(x, xs, ridge)) - 0.9 * ppm
        cv2.rectangle(img, (int(x), int(y - 0.5 * ppm)), (int(x + 0.55 * ppm), int(y)), wall_col,
                      -1, cv2.LINE_AA)
    for x in rng.uniform(0.05, 0.95, int(rng.integers(2, 5))) * w:
        y = float(np.interp(x, xs, ridge))
        cv2.rectangle(img, (int(x - 0.9 * ppm), int(y - 2.4 * ppm)),
                      (int(x + 1.0 * ppm), int(y)), wall_col, -1, cv2.LINE_AA)


# --------------------------------------------------------------------------- styles


def _label_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return _clip_rgb((30 + rng.uniform(-15, 20), 110 + rng.uniform(-20, 20),
                      170 + rng.uniform(-20, 25)))


def _value_color(rng: np.random.Generator) -> tuple[int, int, int]:
    g = rng.uniform(0, 60)
    return _clip_rgb(g + rng.uniform(-8, 8, 3))


def _styles(rng: np.random.Generator) -> tuple[_Style, _Style, _Style]:
    """(label, value, number) styles for one card."""
    label_fam = _choice(rng, _CJK_WEIGHTS)
    value_fam = label_fam if rng.random() < 0.4 else _choice(rng, _CJK_WEIGHTS)
    value_bold = rng.random() < 0.35
    mono = _available_mono()
    num_fam = mono[int(rng.integers(len(mono)))]
    num_bold = rng.random() < (0.7 if num_fam == "freemono" else 0.35)
    label = _Style(F.CJK_FAMILIES[label_fam][0], False, _label_color(rng))
    vreg, vbold = F.CJK_FAMILIES[value_fam]
    value = _Style(vbold if value_bold else vreg, value_bold, _value_color(rng))
    nreg, nbold = F.MONO_FAMILIES[num_fam]
    number = _Style(nbold if num_bold else nreg, num_bold, value.color)
    return label, value, number


def _wrap(text: str, per_line: int) -> list[str]:
    return [text[i:i + per_line] for i in range(0, len(text), per_line)] or [""]


def _canvas(rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
    ppm = 10.0 * scale
    w, h = round(CARD_W_MM * ppm), round(CARD_H_MM * ppm)
    return _card_background(rng, h, w, ppm), ppm


def _export(writer: _Writer, layout: dict | None, styles: tuple[_Style, ...]) -> None:
    if layout is None:
        return
    layout["boxes"] = {k: tuple(float(v) for v in b) for k, b in writer.boxes.items()}
    layout["fonts"] = [f"{s.face.family}{' bold' if s.bold else ''}" for s in styles]
    layout["px_per_mm"] = writer.ppm


# --------------------------------------------------------------------------- public


def render_front(identity: Identity, rng: np.random.Generator, scale: float = 2.0, *,
                 layout: dict | None = None) -> np.ndarray:
    """Front (portrait side) of the card as BGRA uint8, 856*scale x 540*scale pixels.

    If ``layout`` is a dict it receives ``boxes``: field -> (x0, y0, x1, y1) ink boxes in
    card pixels (``name``, ``sex``, ``ethnicity``, ``birth``, ``address``, ``number``,
    ``portrait`` and the ``label_*`` captions), plus the fonts used.
    """
    rgb, ppm = _canvas(rng, scale)
    h, w = rgb.shape[:2]

    # Portrait first, so that text is never covered by it.
    px0, py0 = (55 + _jit(rng, 0.4)) * ppm, (6 + _jit(rng, 0.4)) * ppm
    pw, ph = round(25.5 * ppm), round(32 * ppm)
    ix, iy = round(px0), round(py0)
    por, alpha = _portrait(rng, pw, ph, identity.sex)
    roi = rgb[iy:iy + ph, ix:ix + pw].astype(np.float32)
    a = alpha[..., None]
    rgb[iy:iy + ph, ix:ix + pw] = np.clip(roi * (1 - a) + por * a, 0, 255).astype(np.uint8)

    label, value, number = _styles(rng)
    img = Image.fromarray(rgb)
    wr = _Writer(img, ppm)
    wr.boxes["portrait"] = (ix, iy, ix + pw, iy + ph)
    lh = 2.6  # label character height (mm)
    vh = 3.0  # value character height (mm)
    lpitch = rng.uniform(4.0, 4.6)  # two-character captions are spaced out

    def caption(key: str, text: str, x: float, y: float) -> None:
        wr.run(key, text, label, x + _jit(rng), y + _jit(rng), lh * _sz(rng), pitch_mm=lpitch)

    caption("label_name", "姓名", 6.5, 10.5)
    wr.run("name", identity.name, value, 16.5 + _jit(rng), 10.5 + _jit(rng), 3.4 * _sz(rng),
           pitch_mm=3.4 * rng.uniform(1.0, 1.08), narrow_gap_mm=0.3)

    caption("label_sex", "性别", 6.5, 17)
    wr.run("sex", identity.sex, value, 16.5 + _jit(rng), 17 + _jit(rng), vh * _sz(rng))
    caption("label_ethnicity", "民族", 30, 17)
    wr.run("ethnicity", identity.ethnicity, value, 40 + _jit(rng), 17 + _jit(rng),
           vh * _sz(rng), pitch_mm=vh * 1.05)

    caption("label_birth", "出生", 6.5, 23.5)
    bx, by, bh = _jit(rng), 23.5 + _jit(rng), vh * _sz(rng)
    b: date = identity.birth
    x = wr.run("birth", f"{b.year:04d}", value, 16.5 + bx, by, bh)
    x = wr.run("birth", "年", value, max(26 + bx, x + 0.6), by, bh)
    x = wr.run("birth", str(b.month), value, max(30.5 + bx, x + 1.0), by, bh)
    x = wr.run("birth", "月", value, max(34.5 + bx, x + 0.6), by, bh)
    x = wr.run("birth", str(b.day), value, max(38.5 + bx, x + 1.0), by, bh)
    wr.run("birth", "日", value, max(43 + bx, x + 0.6), by, bh)

    caption("label_address", "住址", 6.5, 30)
    lines = _wrap(identity.address, 11)
    # Four lines would run into the number: tighten the pitch then.
    pitch = 4.5 if len(lines) <= 3 else 3.9
    ax, ay, ah = 16.5 + _jit(rng), 30 + _jit(rng, 0.4), vh * _sz(rng)
    cell = 34.0 / 11 * rng.uniform(0.98, 1.02)
    for i, line in enumerate(lines):
        wr.run("address", line, value, ax, ay + i * pitch, ah, pitch_mm=cell)

    wr.spread("label_number", "公民身份号码", label, 6.5 + _jit(rng), 46.5 + _jit(rng),
              lh * _sz(rng), span_mm=rng.uniform(16.5, 18.5))
    nh = 3.6 * _sz(rng)
    span = 48.0 * rng.uniform(0.97, 1.03)
    sz = F.size_for_height(number.face, nh * ppm, ref="0", nominal=0.73)
    digit_w = F.font(number.face, sz).getlength("0") / ppm
    wr.run("number", identity.number, number, 29.5 + _jit(rng), 46.5 + _jit(rng), nh,
           fixed_mm=(span - digit_w) / 17, ref="0", nominal=0.73)

    out = _finish(np.asarray(img), ppm)
    _export(wr, layout, (label, value, number))
    return out


def render_back(identity: Identity, rng: np.random.Generator, scale: float = 2.0, *,
                layout: dict | None = None) -> np.ndarray:
    """Back (emblem side) of the card as BGRA uint8; see :func:`render_front`.

    ``layout['boxes']`` gets ``title``, ``subtitle``, ``issue``, ``valid_period``,
    ``valid_from``, ``valid_to``, ``emblem`` and the ``label_*`` captions.
    """
    rgb, ppm = _canvas(rng, scale)
    _great_wall(rgb, rng, ppm)
    ex, ey = 5 + _jit(rng, 0.4), 4 + _jit(rng, 0.4)
    esize = 16 * rng.uniform(0.97, 1.03)
    _emblem(rgb, rng, ppm, ex, ey, esize)

    label, value, _ = _styles(rng)
    title = _Style(value.face, value.bold, _value_color(rng))
    heavy = _Style(F.CJK_FAMILIES[_choice(rng, {"noto_sans": 0.4, "noto_serif": 0.3,
                                                "wqy_zenhei": 0.15, "wqy_microhei": 0.15})][1],
                   True, title.color)
    img = Image.fromarray(rgb)
    wr = _Writer(img, ppm)
    wr.boxes["emblem"] = (ex * ppm, ey * ppm, (ex + esize) * ppm, (ey + esize) * ppm)

    wr.spread("title", "中华人民共和国", title, 53 + _jit(rng), 11 + _jit(rng), 4.0 * _sz(rng),
              span_mm=45 * rng.uniform(0.97, 1.03), centre=True)
    wr.spread("subtitle", "居民身份证", heavy, 53 + _jit(rng), 21 + _jit(rng), 6.5 * _sz(rng),
              span_mm=50 * rng.uniform(0.97, 1.02), centre=True)

    lh, vh = 2.6, 3.0
    lpitch = rng.uniform(2.9, 3.1)
    wr.run("label_issue", "签发机关", label, 17 + _jit(rng), 40.5 + _jit(rng), lh * _sz(rng),
           pitch_mm=lpitch)
    wr.run("issue", identity.issue, value, 31 + _jit(rng), 40.5 + _jit(rng), vh * _sz(rng),
           pitch_mm=vh * rng.uniform(1.0, 1.06))
    wr.run("label_valid", "有效期限", label, 17 + _jit(rng), 47 + _jit(rng), lh * _sz(rng),
           pitch_mm=lpitch)
    vf = identity.valid_from.strftime("%Y.%m.%d")
    vt = identity.valid_to if isinstance(identity.valid_to, str) else (
        identity.valid_to.strftime("%Y.%m.%d"))
    vx, vy, vhh = 31 + _jit(rng), 47 + _jit(rng), vh * _sz(rng)
    gap = rng.uniform(0.0, 0.25)
    x = wr.run("valid_from", vf, value, vx, vy, vhh, pitch_mm=vh, narrow_gap_mm=gap)
    x = wr.run("valid_dash", "-", value, x, vy, vhh, pitch_mm=vh, narrow_gap_mm=gap)
    wr.run("valid_to", vt, value, x, vy, vhh, pitch_mm=vh * 1.02, narrow_gap_mm=gap)
    bxs = [wr.boxes[k] for k in ("valid_from", "valid_dash", "valid_to")]
    wr.boxes["valid_period"] = (min(b[0] for b in bxs), min(b[1] for b in bxs),
                                max(b[2] for b in bxs), max(b[3] for b in bxs))
    del wr.boxes["valid_dash"]

    out = _finish(np.asarray(img), ppm)
    _export(wr, layout, (label, value, heavy))
    return out


# --------------------------------------------------------------------------- interim

INTERIM_TITLE = "临时居民身份证"
#: A temporary card is valid for three months.
INTERIM_VALID_DAYS = 91


def _paper_background(rng: np.random.Generator, h: int, w: int, ppm: float) -> np.ndarray:
    """Film-sealed paper: a pale tint, fibres and mottling, and no guilloche."""
    tint = str(rng.choice(["blue", "green", "beige", "grey"]))
    base = _base_color(rng, tint)
    img = _low_freq(rng, h, w, base, rng.uniform(2, 6), rng.uniform(1.5, 3.5)).astype(np.float32)
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.6) * rng.uniform(3, 6)
    img += grain[..., None]
    # A few short fibres, darker than the paper.
    fib = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(80, 200))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang, length = rng.uniform(0, math.pi), rng.uniform(0.5, 2.0) * ppm
        dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        cv2.line(fib, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)),
                 float(rng.uniform(6, 16)), 1, cv2.LINE_AA)
    img -= fib[..., None]
    # The printed frame of the form, inset from the edge.
    frame = _clip_rgb(base - np.array(_TINTS[tint], np.float32) * 2.5)
    inset = rng.uniform(1.6, 2.4) * ppm
    out = np.clip(img, 0, 255).astype(np.uint8)
    cv2.rectangle(out, (int(inset), int(inset)), (int(w - inset), int(h - inset)), frame,
                  max(1, round(ppm / 12)), cv2.LINE_AA)
    return out


def render_interim(identity: Identity, rng: np.random.Generator, scale: float = 2.0, *,
                   face: str = "front", issued: date | None = None,
                   layout: dict | None = None) -> np.ndarray:
    """A temporary resident ID card (临时居民身份证) as BGRA uint8, the card's size.

    Paper-like (no guilloche, a printed frame), with the title 临时居民身份证 on both
    faces. ``face='front'``: the portrait face, the title over the usual labels, which
    sit a little lower than on a regular card. ``face='back'``: the emblem face with
    中华人民共和国 / 临时居民身份证, the issuer and a three-month validity from ``issued``
    (default: the identity's ``valid_from``). ``layout`` as in :func:`render_front`, plus
    ``valid_from``/``valid_to`` dates on the back.
    """
    if face not in ("front", "back"):
        raise ValueError("face must be 'front' or 'back'")
    ppm = 10.0 * scale
    w, h = round(CARD_W_MM * ppm), round(CARD_H_MM * ppm)
    rgb = _paper_background(rng, h, w, ppm)
    label, value, number = _styles(rng)
    title_col = _clip_rgb((rng.uniform(120, 170), rng.uniform(10, 40), rng.uniform(20, 50)))
    title_face = F.CJK_FAMILIES[_choice(rng, {"noto_sans": 0.4, "noto_serif": 0.3,
                                              "wqy_zenhei": 0.3})][1]
    title = _Style(title_face, True, title_col)
    lh, vh = 2.6, 3.0

    if face == "front":
        px0, py0 = (56.5 + _jit(rng, 0.4)) * ppm, (10 + _jit(rng, 0.4)) * ppm
        pw, ph = round(23.5 * ppm), round(29.5 * ppm)
        ix, iy = round(px0), round(py0)
        por, alpha = _portrait(rng, pw, ph, identity.sex)
        roi = rgb[iy:iy + ph, ix:ix + pw].astype(np.float32)
        a = alpha[..., None]
        rgb[iy:iy + ph, ix:ix + pw] = np.clip(roi * (1 - a) + por * a, 0, 255).astype(np.uint8)
        img = Image.fromarray(rgb)
        wr = _Writer(img, ppm)
        wr.boxes["portrait"] = (ix, iy, ix + pw, iy + ph)
        wr.spread("title", INTERIM_TITLE, title, 42.8 + _jit(rng), 6.0 + _jit(rng, 0.3),
                  3.8 * _sz(rng), span_mm=rng.uniform(34, 40), centre=True)
        lpitch = rng.uniform(4.0, 4.6)

        def caption(key: str, text: str, x: float, y: float) -> None:
            wr.run(key, text, label, x + _jit(rng), y + _jit(rng), lh * _sz(rng),
                   pitch_mm=lpitch)

        caption("label_name", "姓名", 6.5, 13)
        wr.run("name", identity.name, value, 16.5 + _jit(rng), 13 + _jit(rng),
               3.2 * _sz(rng), pitch_mm=3.3, narrow_gap_mm=0.3)
        caption("label_sex", "性别", 6.5, 19)
        wr.run("sex", identity.sex, value, 16.5 + _jit(rng), 19 + _jit(rng), vh * _sz(rng))
        caption("label_ethnicity", "民族", 29, 19)
        wr.run("ethnicity", identity.ethnicity, value, 39 + _jit(rng), 19 + _jit(rng),
               vh * _sz(rng), pitch_mm=vh * 1.05)
        caption("label_birth", "出生", 6.5, 25)
        b = identity.birth
        wr.run("birth", f"{b.year:04d}年{b.month}月{b.day}日", value, 16.5 + _jit(rng),
               25 + _jit(rng), vh * _sz(rng), pitch_mm=vh * 1.02, narrow_gap_mm=0.2)
        caption("label_address", "住址", 6.5, 31)
        lines = _wrap(identity.address, 12)[:3]
        ax, ay = 16.5 + _jit(rng), 31 + _jit(rng, 0.4)
        for i, line in enumerate(lines):
            wr.run("address", line, value, ax, ay + i * 4.2, vh * _sz(rng), pitch_mm=3.1)
        wr.spread("label_number", "公民身份号码", label, 6.5 + _jit(rng), 47.5 + _jit(rng),
                  lh * _sz(rng), span_mm=rng.uniform(16.5, 18.5))
        nh = 3.4 * _sz(rng)
        sz = F.size_for_height(number.face, nh * ppm, ref="0", nominal=0.73)
        digit_w = F.font(number.face, sz).getlength("0") / ppm
        wr.run("number", identity.number, number, 29.5 + _jit(rng), 47.5 + _jit(rng), nh,
               fixed_mm=(46.0 - digit_w) / 17, ref="0", nominal=0.73)
        styles = (label, value, number)
    else:
        _emblem(rgb, rng, ppm, 6 + _jit(rng, 0.4), 5 + _jit(rng, 0.4), 14)
        img = Image.fromarray(rgb)
        wr = _Writer(img, ppm)
        wr.spread("title", "中华人民共和国", title, 52 + _jit(rng), 10 + _jit(rng),
                  3.8 * _sz(rng), span_mm=40 * rng.uniform(0.97, 1.03), centre=True)
        wr.spread("subtitle", INTERIM_TITLE, title, 52 + _jit(rng), 20 + _jit(rng),
                  5.5 * _sz(rng), span_mm=52 * rng.uniform(0.97, 1.02), centre=True)
        lpitch = rng.uniform(2.9, 3.1)
        wr.run("label_issue", "签发机关", label, 17 + _jit(rng), 38.5 + _jit(rng),
               lh * _sz(rng), pitch_mm=lpitch)
        wr.run("issue", identity.issue, value, 31 + _jit(rng), 38.5 + _jit(rng),
               vh * _sz(rng), pitch_mm=vh * 1.03)
        wr.run("label_valid", "有效期限", label, 17 + _jit(rng), 45.5 + _jit(rng),
               lh * _sz(rng), pitch_mm=lpitch)
        vf = issued or identity.valid_from
        vt = date.fromordinal(vf.toordinal() + INTERIM_VALID_DAYS)
        text = f"{vf.strftime('%Y.%m.%d')}-{vt.strftime('%Y.%m.%d')}"
        wr.run("valid_period", text, value, 31 + _jit(rng), 45.5 + _jit(rng), vh * _sz(rng),
               pitch_mm=vh, narrow_gap_mm=0.1)
        if layout is not None:
            layout["valid_from"], layout["valid_to"] = vf, vt
        styles = (label, value, title)
    out = _finish(np.asarray(img), ppm)
    _export(wr, layout, styles)
    return out
