"""Photos that should raise one of the eight alerts, and hard photos that must not.

:func:`make_alert_photo` turns a seed, a *condition* and a *strength* in [0, 1] into a
:class:`~synthcard.photo.Case` whose ``labels`` say, per alert, whether the photo
should raise it. A condition is either an alert name (the names of the recognition
API's ``detect_*`` flags) or one of :data:`HARD_NEGATIVES`: legitimate photos under hard
conditions. Strength 0 is the mildest case the alert is meant to catch, 1 the most
blatant; every condition's parameters grow monotonically with it.

========================  ============================================================
condition                 what the photo shows
========================  ============================================================
reproduce                 the card photographed off a screen (RGB sub-pixel grid,
                          moiré, blue cast, raised black, bezel) or off a colour print
                          (CMY half-tone rosette)
copy                      a black-and-white photocopy of the card: photographed on its
                          sheet, or a flat scan
tampering                 a field covered with a patch of paper colour and re-typed in
                          another font, size and ink, after the photo's own JPEG
                          (strength: how different); or an editor in EXIF ``Software``
border_integrity          the frame cuts off one side or one corner of the card
blocking_within_border    a finger, a coin, a pen or a phone over part of the card
blur                      defocus or motion blur, relative to the printed text's height
interim                   a temporary resident ID card (either face)
glare                     a specular reflection over the text
clean, mild               everyday photos
lowlight                  dim, warm or cold light, sensor noise
blur_slight               slight defocus or shake that leaves the text crisp enough
texture                   a strong wood / fabric / marble background around the card
tight                     cropped close to the card, which is still whole
phone_exif                a phone's own camera software in EXIF ``Software``
glare_mild                a faint reflection (undetermined for ``glare`` itself)
========================  ============================================================

Labels: a photo is positive for its own condition, negative for every other alert,
except the alerts in :data:`UNDETERMINED` for its condition, which are left out (a
photocopy photographed is arguably also a reproduction).
"""

from __future__ import annotations

import math
import zlib
from datetime import date
from typing import Any

import cv2
import numpy as np
from PIL import Image

from . import fonts as F
from .identity import DEFAULT_TODAY, Identity, random_identity
from .photo import (
    _MILD,
    PRESETS,
    Case,
    _apply_h,
    _background,
    _box_quad,
    _paste,
    _rect,
    photograph,
    sample_preset,
)
from .render import (
    CARD_H_MM,
    CARD_W_MM,
    _available_cjk,
    render_back,
    render_front,
    render_interim,
)

__all__ = [
    "ALERTS",
    "CONDITIONS",
    "HARD_NEGATIVES",
    "STRENGTHS",
    "UNDETERMINED",
    "make_alert_photo",
]

#: The alert names, in the recognition API's order (``idcard.options.ALERTS``).
ALERTS = ("reproduce", "copy", "tampering", "border_integrity", "blocking_within_border",
          "blur", "interim", "glare")
HARD_NEGATIVES = ("clean", "mild", "lowlight", "blur_slight", "texture", "tight",
                  "phone_exif", "glare_mild")
CONDITIONS = ALERTS + HARD_NEGATIVES
#: The strengths benchmarks sample: four levels from the mildest to the most blatant.
STRENGTHS = (0.0, 1 / 3, 2 / 3, 1.0)

#: condition -> alerts whose truth that condition leaves open (not labelled).
UNDETERMINED: dict[str, frozenset[str]] = {
    # A photocopy photographed is a photo of a print; a recaptured screen is soft.
    "copy": frozenset({"reproduce"}),
    "reproduce": frozenset({"copy"}),
    # A faint reflection: whether it is "glare" is a matter of taste.
    "glare_mild": frozenset({"glare"}),
}

PPM = 20.0  # render scale 2: card pixels per millimetre
_EDITORS = ("Adobe Photoshop 24.1 (Windows)", "Adobe Photoshop CC 2019 (Macintosh)",
            "Adobe Photoshop Lightroom Classic 12.0", "GIMP 2.10.34", "美图秀秀",
            "Meitu 9.8.1", "PicsArt 22.4", "Snapseed 2.21", "paint.net 5.0.9",
            "Photoshop Express 8.0")
_PHONES = ("iOS 17.4.1", "16.6", "MIUI Camera", "HDR+ 1.0.540104252zd", "Android 14",
           "ELE-AL00 10.1.0.150(C00E145R1P3)", "SM-G9910 G9910ZHS5CWC1", "vivo X90",
           "OPPO Camera")


# --------------------------------------------------------------------------- helpers


def _legit_spec() -> dict[str, Any]:
    """Everyday photo parameters that raise no alert by themselves."""
    return {**_MILD, "blur_sigma": (0.0, 0.6), "background": ["plain", "texture", "clutter"]}


def _mm_to_px(h_edge: np.ndarray) -> np.ndarray:
    """Card millimetres -> photo pixel centres, from a card-pixel-edge homography."""
    return np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ h_edge @ np.diag([PPM, PPM, 1])


def _card_mm_quad() -> np.ndarray:
    return _rect(CARD_W_MM, CARD_H_MM)


def _sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Luminance plus coarser chroma noise, as :func:`synthcard.photograph` adds it."""
    if sigma <= 0:
        return img
    h, w = img.shape[:2]
    u = rng.integers(0, 256, (2, h, w), dtype=np.uint8).astype(np.int16)
    n = (u[0] + u[1] - 255).astype(np.float32) * (sigma / 104.4)
    cn = rng.normal(0, sigma * 0.5, (max(2, h // 4), max(2, w // 4), 3)).astype(np.float32)
    cn = cv2.resize(cn, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.add(cn, cv2.merge([n, n, n]), cn)
    return cv2.convertScaleAbs(img.astype(np.float32) + cn)


def _jpeg(img: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes(), cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _with_software(jpeg: bytes, software: str) -> bytes:
    """The JPEG with an APP1 EXIF segment holding ``Software`` (tag 0x0131)."""
    exif = Image.Exif()
    # UTF-8 bytes: EXIF ASCII cannot hold 美图秀秀, and editors write UTF-8 there anyway.
    exif[0x0131] = software.encode("utf-8") if not software.isascii() else software
    payload = exif.tobytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def _shoot(cards: list[np.ndarray], rng: np.random.Generator, spec: dict[str, Any],
           **overrides: Any) -> tuple[Any, float, int]:
    """photograph() without noise or JPEG; returns (photo, noise sigma, JPEG quality)."""
    kw = sample_preset(spec, rng)
    noise = float(kw.pop("noise_sigma", 0.0))
    quality = int(kw.pop("jpeg_quality", 90) or 90)
    kw.update(overrides)
    return photograph(cards, rng, jpeg_quality=None, noise_sigma=0.0, **kw), noise, quality


def _render(ident: Identity, rng: np.random.Generator, face: str, interim: bool = False
            ) -> tuple[np.ndarray, dict]:
    lay: dict = {}
    if interim:
        issued = date.fromordinal(DEFAULT_TODAY.toordinal() - int(rng.integers(1, 80)))
        card = render_interim(ident, rng, face=face, issued=issued, layout=lay)
    else:
        card = (render_front if face == "front" else render_back)(ident, rng, layout=lay)
    return card, lay


def _text_height_px(h_mm: np.ndarray) -> float:
    """Height in photo pixels of 3 mm of print (a value line) at the card's centre."""
    c = np.array([[CARD_W_MM / 2, CARD_H_MM / 2], [CARD_W_MM / 2, CARD_H_MM / 2 + 3.0]])
    p = _apply_h(h_mm, c)
    return float(np.linalg.norm(p[1] - p[0]))


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    n = int(math.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    dx, dy = math.cos(math.radians(angle)) * length / 2, math.sin(math.radians(angle)) * length / 2
    cv2.line(k, (int(round(c * 16 - dx * 16)), int(round(c * 16 - dy * 16))),
             (int(round(c * 16 + dx * 16)), int(round(c * 16 + dy * 16))), 1.0, 1, cv2.LINE_AA,
             4)
    return k / max(1e-6, float(k.sum()))


def _blur(img: np.ndarray, rng: np.random.Generator, rel: float, text_px: float) -> dict:
    """Defocus (60 %) or motion blur whose size is ``rel`` times the text height."""
    sigma = rel * text_px
    if rng.random() < 0.6:
        img[:] = cv2.GaussianBlur(img, (0, 0), max(0.3, sigma))
        return {"kind": "defocus", "sigma_px": round(sigma, 2)}
    length = max(2.0, 3.2 * sigma)
    angle = float(rng.uniform(0, 180))
    img[:] = cv2.filter2D(img, -1, _motion_kernel(length, angle))
    return {"kind": "motion", "length_px": round(length, 2), "angle": round(angle, 1)}


# --------------------------------------------------------------------------- conditions


def _glare(img: np.ndarray, rng: np.random.Generator, h_mm: np.ndarray, face: str,
           intensity: float, size_mm: float) -> dict:
    """An additive specular blob centred over printed text."""
    # Over a printed row: the captions and values, the number, the titles, the issuer.
    if face == "front":
        cx, cy = rng.uniform(8, 50), float(rng.choice([10.5, 17, 23.5, 30, 46.5]))
    else:
        cx, cy = rng.uniform(25, 70), float(rng.choice([11, 21, 40.5, 47]))
    cy += rng.uniform(-2, 2)
    H, W = img.shape[:2]
    c = _apply_h(h_mm, np.array([[cx, cy]]))[0]
    px_per_mm = _text_height_px(h_mm) / 3.0
    ax = size_mm * px_per_mm
    ay = ax * rng.uniform(0.45, 0.9)
    ang = rng.uniform(0, math.pi)
    sh, sw = max(2, H // 4), max(2, W // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    dx, dy = (xx + 0.5) * W / sw - c[0], (yy + 0.5) * H / sh - c[1]
    u = (dx * math.cos(ang) + dy * math.sin(ang)) / ax
    v = (-dx * math.sin(ang) + dy * math.cos(ang)) / ay
    g = np.exp(-(u * u + v * v) * 1.5).astype(np.float32)
    add = cv2.resize(g * intensity * 255 * 1.3, (W, H), interpolation=cv2.INTER_LINEAR)
    f32 = img.astype(np.float32) + add[..., None]
    img[:] = cv2.convertScaleAbs(f32)
    return {"center_mm": [round(cx, 1), round(cy, 1)], "size_mm": round(size_mm, 1),
            "intensity": round(intensity, 3)}


def _border_cut(img: np.ndarray, rng: np.random.Generator, quad: np.ndarray, cut_mm: float,
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Crop the photo so that ``cut_mm`` of the card lies outside the frame."""
    H, W = img.shape[:2]
    px_per_mm = float(np.linalg.norm(quad[1] - quad[0])) / CARD_W_MM
    corner = rng.random() < 0.4
    depth = cut_mm * px_per_mm / (math.sqrt(2) if corner else 1.0)
    x0, y0, x1, y1 = 0.0, 0.0, float(W), float(H)
    lo, hi = quad.min(0), quad.max(0)
    sides = ["left", "right", "top", "bottom"]
    if corner:
        first = sides[int(rng.integers(2))]
        second = sides[2 + int(rng.integers(2))]
        chosen = [first, second]
    else:
        chosen = [sides[int(rng.integers(4))]]
    for s in chosen:
        # The extreme of the card on that side, moved inward by the cut depth. On a
        # rotated card the extreme is a corner: cut as deep along the whole side.
        if s == "left":
            x0 = lo[0] + depth
        elif s == "right":
            x1 = hi[0] - depth
        elif s == "top":
            y0 = lo[1] + depth
        else:
            y1 = hi[1] - depth
    ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    ix1, iy1 = min(W, int(math.ceil(x1))), min(H, int(math.ceil(y1)))
    out = np.ascontiguousarray(img[iy0:iy1, ix0:ix1])
    shift = np.array([[1, 0, -ix0], [0, 1, -iy0], [0, 0, 1]], np.float64)
    return out, shift, {"sides": chosen, "cut_mm": round(cut_mm, 2)}


def _tight_crop(img: np.ndarray, rng: np.random.Generator, quad: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Crop close around the whole card: 0.5-2 mm of background left on each side."""
    H, W = img.shape[:2]
    px_per_mm = float(np.linalg.norm(quad[1] - quad[0])) / CARD_W_MM
    lo, hi = quad.min(0), quad.max(0)
    m = rng.uniform(0.5, 2.0, 4) * px_per_mm
    ix0, iy0 = max(0, int(lo[0] - m[0])), max(0, int(lo[1] - m[1]))
    ix1, iy1 = min(W, int(math.ceil(hi[0] + m[2]))), min(H, int(math.ceil(hi[1] + m[3])))
    out = np.ascontiguousarray(img[iy0:iy1, ix0:ix1])
    shift = np.array([[1, 0, -ix0], [0, 1, -iy0], [0, 0, 1]], np.float64)
    return out, shift, {"margin_mm": [round(float(v / px_per_mm), 2) for v in m]}


def _skin(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(95, 150), rng.uniform(130, 175), rng.uniform(185, 235)],
                    np.float32)  # BGR


OCC_PPM = 8.0  # occluders are smooth: drawn at 8 px/mm, then warped into the photo


def _occluder(rng: np.random.Generator, area_mm2: float) -> tuple[np.ndarray, dict]:
    """A BGRA occluder drawn in card millimetres at OCC_PPM, and its description.

    The image spans the card (plus a 30 mm margin on every side, so fingers can come in
    from outside); alpha is the object.
    """
    m = 30.0
    w, h = int((CARD_W_MM + 2 * m) * OCC_PPM), int((CARD_H_MM + 2 * m) * OCC_PPM)
    rgba = np.zeros((h, w, 4), np.float32)
    kind = str(rng.choice(["finger", "finger", "coin", "pen", "phone"]))
    mask = np.zeros((h, w), np.uint8)

    def to_px(x_mm: float, y_mm: float) -> tuple[int, int]:
        return int(round((x_mm + m) * OCC_PPM)), int(round((y_mm + m) * OCC_PPM))

    info: dict = {"kind": kind}
    if kind == "finger":
        width = rng.uniform(14, 18)
        edge = str(rng.choice(["bottom", "top", "left", "right"]))
        depth = float(np.clip(area_mm2 / width, 4, 48 if edge in ("top", "bottom") else 70))
        along = rng.uniform(0.15, 0.85)
        tilt = math.radians(rng.uniform(-25, 25))
        if edge in ("bottom", "top"):
            ex = along * CARD_W_MM
            ey = CARD_H_MM if edge == "bottom" else 0.0
            d = np.array([math.sin(tilt), -1.0 if edge == "bottom" else 1.0])
        else:
            ey = along * CARD_H_MM
            ex = 0.0 if edge == "left" else CARD_W_MM
            d = np.array([1.0 if edge == "left" else -1.0, math.sin(tilt)])
        d = d / np.linalg.norm(d)
        tip = np.array([ex, ey]) + d * depth
        base = np.array([ex, ey]) - d * 40
        color = _skin(rng)
        perp = np.array([-d[1], d[0]])
        # Body as a thick line with a round tip; shading across the width.
        cv2.line(mask, to_px(*base), to_px(*tip), 255, int(width * OCC_PPM), cv2.LINE_AA)
        cv2.circle(mask, to_px(*tip), int(width * OCC_PPM / 2), 255, -1, cv2.LINE_AA)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        px = (xx / OCC_PPM - m - tip[0]) * perp[0] + (yy / OCC_PPM - m - tip[1]) * perp[1]
        shade = np.clip(1.0 - (px / (width / 2)) ** 2, 0, 1) ** 0.5
        body = color[None, None] * (0.6 + 0.45 * shade[..., None])
        rgba[..., :3] = body
        # The nail, near the tip, lighter and pinker.
        nail_c = tip - d * width * 0.35
        nail = np.zeros_like(mask)
        ang = math.degrees(math.atan2(d[1], d[0]))
        cv2.ellipse(nail, to_px(*nail_c), (int(width * 0.3 * OCC_PPM), int(width * 0.28 * OCC_PPM)),
                    ang, 0, 360, 255, -1, cv2.LINE_AA)
        nail_col = np.clip(color * np.array([1.05, 1.02, 1.05]) + 25, 0, 255)
        a = (nail.astype(np.float32) / 255)[..., None] * 0.8
        rgba[..., :3] = rgba[..., :3] * (1 - a) + nail_col[None, None] * a
        info.update(edge=edge, width_mm=round(width, 1), depth_mm=round(depth, 1))
    elif kind == "coin":
        r = float(np.clip(math.sqrt(area_mm2 / math.pi), 6, 22))
        c = (rng.uniform(r * 0.6, CARD_W_MM - r * 0.6), rng.uniform(r * 0.6, CARD_H_MM - r * 0.6))
        metal = np.array(rng.choice([[150, 150, 155], [60, 150, 200], [90, 120, 160]]),
                         np.float32) + rng.uniform(-15, 15)
        cv2.circle(mask, to_px(*c), int(r * OCC_PPM), 255, -1, cv2.LINE_AA)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gx = (xx / OCC_PPM - m - c[0]) / r
        gy = (yy / OCC_PPM - m - c[1]) / r
        light = 0.75 + 0.35 * np.clip(-(gx + gy) * 0.7, -1, 1)
        ring = (np.hypot(gx, gy) > 0.86).astype(np.float32) * -0.2
        rgba[..., :3] = metal[None, None] * (light + ring)[..., None]
        info.update(radius_mm=round(r, 1), center_mm=[round(c[0], 1), round(c[1], 1)])
    elif kind == "pen":
        width = rng.uniform(8, 11)
        length = float(np.clip(area_mm2 / width, 15, 110))
        ang = rng.uniform(0, math.pi)
        d = np.array([math.cos(ang), math.sin(ang)])
        c = np.array([rng.uniform(20, 65), rng.uniform(15, 40)])
        p0, p1 = c - d * length / 2, c + d * length / 2
        col = np.array(rng.choice([[40, 30, 30], [120, 40, 20], [30, 30, 140], [90, 90, 95]]),
                       np.float32)
        cv2.line(mask, to_px(*p0), to_px(*p1), 255, int(width * OCC_PPM), cv2.LINE_AA)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        perp = np.array([-d[1], d[0]])
        px = (xx / OCC_PPM - m - c[0]) * perp[0] + (yy / OCC_PPM - m - c[1]) * perp[1]
        shade = 0.7 + 0.5 * np.clip(1 - (px / (width / 2)) ** 2, 0, 1)
        rgba[..., :3] = col[None, None] * shade[..., None] + 10
        info.update(width_mm=round(width, 1), length_mm=round(length, 1))
    else:  # phone: a dark rounded rectangle over one corner
        side = math.sqrt(area_mm2)
        cw, ch = side * rng.uniform(0.8, 1.3), side / rng.uniform(0.8, 1.3)
        corner = int(rng.integers(4))
        x = -20.0 if corner in (0, 3) else CARD_W_MM - cw
        y = -20.0 if corner in (0, 1) else CARD_H_MM - ch
        if corner in (0, 3):
            cw += 20
        if corner in (0, 1):
            ch += 20
        p0, p1 = to_px(x, y), to_px(x + cw, y + ch)
        cv2.rectangle(mask, p0, p1, 255, -1, cv2.LINE_AA)
        col = rng.uniform(15, 45) + rng.uniform(-5, 5, 3)
        rgba[..., :3] = np.array(col, np.float32)[None, None]
        info.update(corner=corner)
    soft = cv2.GaussianBlur(mask, (0, 0), 1.2).astype(np.float32) / 255
    rgba[..., 3] = soft * 255
    out = np.clip(rgba, 0, 255).astype(np.uint8)
    info["margin_mm"] = m
    return out, info


def _occlude(img: np.ndarray, rng: np.random.Generator, h_mm: np.ndarray, area_frac: float
             ) -> dict:
    area = area_frac * CARD_W_MM * CARD_H_MM
    occ, info = _occluder(rng, area)
    m = info["margin_mm"]
    # Occluder pixels (mm + margin at OCC_PPM, pixel centres) -> photo pixel centres.
    half = 0.5 / OCC_PPM
    to_mm = np.array([[1 / OCC_PPM, 0, -m + half], [0, 1 / OCC_PPM, -m + half], [0, 0, 1]])
    h = h_mm @ to_mm
    # A soft shadow first, offset a little down and right on the card.
    shadow = occ.copy()
    shadow[..., :3] = 0
    shadow[..., 3] = (cv2.GaussianBlur(occ[..., 3], (0, 0), 1.5 * OCC_PPM) * 0.45).astype(np.uint8)
    off = np.array([[1, 0, 1.2 * OCC_PPM], [0, 1, 1.5 * OCC_PPM], [0, 0, 1]])
    _paste(img, shadow, h @ np.linalg.inv(off))
    _paste(img, occ, h)
    # The covered share of the card, measured on the occluder's own grid.
    mp = int(m * OCC_PPM)
    on_card = occ[mp:mp + int(CARD_H_MM * OCC_PPM), mp:mp + int(CARD_W_MM * OCC_PPM), 3]
    info["covered"] = round(float((on_card > 127).mean()), 4)
    del info["margin_mm"]
    return info


# --------------------------------------------------------------------------- reproduce


def _screen_capture(content: np.ndarray, rng: np.random.Generator, strength: float
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Photograph ``content`` shown on an LCD; returns (photo, content->photo map, info)."""
    ch_, cw_ = content.shape[:2]
    long_side = int(rng.integers(1200, 1800))
    W, H = (long_side, round(long_side * 3 / 4)) if cw_ >= ch_ else (round(long_side * 3 / 4),
                                                                     long_side)
    # Where the screen's content lands: most of the frame, a little rotated/tilted.
    fill = rng.uniform(0.78, 0.95)
    s = min(W * fill / cw_, H * fill / ch_)
    cx, cy = W / 2 + rng.uniform(-0.03, 0.03) * W, H / 2 + rng.uniform(-0.03, 0.03) * H
    src = _rect(cw_, ch_)
    dst = (src - [cw_ / 2, ch_ / 2]) * s
    ang = math.radians(rng.uniform(-5, 5))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    dst = dst @ rot.T + [cx, cy]
    dst += rng.uniform(-0.015, 0.015, (4, 2)) * [W, H]
    to_photo = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    inv = np.linalg.inv(to_photo)

    printed = rng.random() < 0.3
    content_f = content.astype(np.float32)
    n = 3  # supersamples per axis: the camera integrates, point sampling aliases
    acc = np.zeros((H, W, 3), np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    gap = rng.uniform(0.15, 0.35)
    grid = 0.35 + 0.65 * strength  # how strongly the sub-pixel structure shows
    # Camera pixels per screen pixel: the grid is resolved above ~2, aliased below.
    pitch = s  # content pixels are screen pixels
    cell = rng.uniform(2.2, 4.0) / s if printed else 1.0  # half-tone cell in content px
    angles = (math.radians(15), math.radians(75), 0.0)
    for i in range(n):
        for j in range(n):
            ox, oy = (j + 0.5) / n - 0.5, (i + 0.5) / n - 0.5
            X, Y = xx + ox, yy + oy
            den = inv[2, 0] * X + inv[2, 1] * Y + inv[2, 2]
            u = ((inv[0, 0] * X + inv[0, 1] * Y + inv[0, 2]) / den).astype(np.float32)
            v = ((inv[1, 0] * X + inv[1, 1] * Y + inv[1, 2]) / den).astype(np.float32)
            sample = cv2.remap(content_f, u - 0.5, v - 0.5, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
            if printed:
                # CMY half-tone: ink dots on rotated grids, dot area = ink coverage.
                out = np.empty_like(sample)
                for c, a in enumerate(angles):
                    ru = (u * math.cos(a) + v * math.sin(a)) / cell
                    rv = (-u * math.sin(a) + v * math.cos(a)) / cell
                    du, dv = ru - np.floor(ru) - 0.5, rv - np.floor(rv) - 0.5
                    r2 = du * du + dv * dv
                    cover = 1 - sample[..., c] / 255.0
                    ink = (r2 * math.pi < np.clip(cover, 0, 1)).astype(np.float32)
                    out[..., c] = 255 * (1 - ink)
                sample = sample * (1 - grid) + out * grid
            else:
                fu, fv = u - np.floor(u), v - np.floor(v)
                sub = np.minimum((fu * 3).astype(np.int32), 2)
                lit = (fv < 1 - gap).astype(np.float32)
                duty = (1 - gap) / 3
                for c in range(3):  # BGR: column 0 is red, 1 green, 2 blue
                    m = ((sub == 2 - c).astype(np.float32) * lit) / duty
                    sample[..., c] *= (1 - grid) + grid * m
            acc += sample
    acc /= n * n
    # Outside the content: the bezel, then the room.
    inside = cv2.warpPerspective(np.ones((ch_, cw_), np.float32), to_photo, (W, H))
    bezel_w = rng.uniform(0.02, 0.06) * min(cw_, ch_)
    bez_src = np.array([[-bezel_w, -bezel_w], [cw_ + bezel_w, -bezel_w],
                        [cw_ + bezel_w, ch_ + bezel_w], [-bezel_w, ch_ + bezel_w]])
    bez_dst = _apply_h(to_photo, bez_src)
    room, _ = _background(rng, "random", H, W)
    out = room.astype(np.float32)
    bez_mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(bez_mask, [np.round(bez_dst * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    bm = (bez_mask.astype(np.float32) / 255)[..., None]
    bezel_col = rng.uniform(10, 40) + rng.uniform(-4, 4, 3) if not printed else rng.uniform(
        225, 250) + rng.uniform(-4, 4, 3)
    out = out * (1 - bm) + np.array(bezel_col, np.float32)[None, None] * bm
    # Screen colour: a cold white point, black glowing, a gamma shift.
    if printed:
        gains = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.0), rng.uniform(1.0, 1.06)])
        black = rng.uniform(10, 25)
    else:
        gains = np.array([rng.uniform(1.04, 1.15), rng.uniform(0.98, 1.04),
                          rng.uniform(0.85, 0.95)])
        black = rng.uniform(18, 40) * (0.6 + 0.4 * strength)
    lit_img = black + acc * gains[None, None] * (1 - black / 255)
    im = inside[..., None]
    out = out * (1 - im) + lit_img * im
    # Lens softness: less at higher strength (the structure survives better).
    sigma = rng.uniform(0.5, 0.9) * (1.2 - 0.5 * strength)
    out = cv2.GaussianBlur(out, (0, 0), sigma)
    info = {"medium": "print" if printed else "screen", "grid": round(grid, 3),
            "camera_px_per_screen_px": round(float(pitch), 3),
            "lens_sigma": round(float(sigma), 3), "black": round(float(black), 1)}
    if printed:
        info["halftone_cell_camera_px"] = round(float(cell * s), 2)
    return np.clip(out, 0, 255).astype(np.uint8), to_photo, info


# --------------------------------------------------------------------------- copy


def _photocopy(card: np.ndarray, rng: np.random.Generator, strength: float
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The card copied in black and white on a white sheet; returns (sheet BGRA,
    card-pixel-edge -> sheet-pixel-edge map, info)."""
    h, w = card.shape[:2]
    gray = cv2.cvtColor(card[..., :3], cv2.COLOR_BGR2GRAY).astype(np.float32)
    a = card[..., 3].astype(np.float32) / 255
    # The copier: a hard tone curve (darker blacks, paper-white background).
    lo = rng.uniform(15, 40) + 50 * strength
    hi = rng.uniform(225, 245) - 30 * strength
    tone = np.clip((gray - lo) / max(1.0, hi - lo), 0, 1) ** rng.uniform(0.9, 1.3) * 255
    tone = cv2.GaussianBlur(tone, (0, 0), rng.uniform(0.6, 1.4))
    # The card's edge shows as a dark line (the card's shadow on the glass).
    edge = np.zeros((h, w), np.float32)
    alpha_edge = cv2.morphologyEx((a > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                                  np.ones((5, 5), np.uint8)).astype(np.float32)
    edge = cv2.GaussianBlur(alpha_edge, (0, 0), 1.5) * rng.uniform(80, 160)
    # Part of a page: wide margins along one axis, so the sheet is not card-shaped.
    mx, my = rng.uniform(0.06, 0.15), rng.uniform(0.35, 0.6)
    if rng.random() < 0.5:
        mx, my = my * CARD_H_MM / CARD_W_MM * 1.6, mx * CARD_W_MM / CARD_H_MM / 1.6
    sw, sh = int(w * (1 + 2 * mx)), int(h * (1 + 2 * my))
    ox, oy = int(w * mx * rng.uniform(0.6, 1.4)), int(h * my * rng.uniform(0.6, 1.4))
    paper = rng.uniform(235, 252)
    sheet = np.full((sh, sw), paper, np.float32)
    region = sheet[oy:oy + h, ox:ox + w]
    sheet[oy:oy + h, ox:ox + w] = region * (1 - a) + tone * a - edge
    # Toner: speckles, a faint streak, a grey haze that grows with wear.
    n_spk = int((200 + 2500 * strength) * rng.uniform(0.6, 1.4))
    ys, xs = rng.integers(0, sh, n_spk), rng.integers(0, sw, n_spk)
    spk = np.zeros_like(sheet)
    spk[ys, xs] = rng.uniform(60, 200, n_spk)
    spk = cv2.GaussianBlur(spk, (0, 0), 0.8) * 4
    sheet -= spk
    if rng.random() < 0.5 + 0.4 * strength:
        x = int(rng.integers(0, sw))
        sheet[:, max(0, x - 2):x + 2] -= rng.uniform(10, 40) * strength + 5
    sheet -= rng.normal(0, 2 + 5 * strength, sheet.shape).astype(np.float32)
    sheet8 = np.clip(sheet, 0, 255).astype(np.uint8)
    out = np.empty((sh, sw, 4), np.uint8)
    out[..., :3] = sheet8[..., None]
    out[..., 3] = 255
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], np.float64)
    return out, m, {"tone": [round(lo, 1), round(hi, 1)],
                    "sheet_margin": [round(float(mx), 3), round(float(my), 3)]}


# --------------------------------------------------------------------------- tampering

_FRONT_TARGETS = ("name", "birth", "number", "address")
_BACK_TARGETS = ("issue", "valid_period")


def _new_text(field_: str, ident: Identity, rng: np.random.Generator) -> str:
    other = random_identity(rng)
    if field_ == "name":
        return other.name
    if field_ == "number":
        digits = list(ident.number)
        for i in rng.choice(17, size=int(rng.integers(2, 5)), replace=False):
            digits[int(i)] = str((int(digits[int(i)]) + int(rng.integers(1, 10))) % 10)
        return "".join(digits)
    if field_ == "birth":
        b = other.birth
        return f"{b.year}年{b.month}月{b.day}日"
    if field_ == "address":
        return other.address[:11]
    if field_ == "issue":
        return other.issue
    vf = other.valid_from
    return f"{vf.strftime('%Y.%m.%d')}-{(vf.year + 20):04d}.{vf.month:02d}.{vf.day:02d}"


def _retype(img: np.ndarray, rng: np.random.Generator, h_edge: np.ndarray, lay: dict,
            face: str, ident: Identity, strength: float) -> dict:
    """Cover one field with a patch of paper colour and type new text over it."""
    targets = _FRONT_TARGETS if face == "front" else _BACK_TARGETS
    key = targets[int(rng.integers(len(targets)))]
    x0, y0, x1, y1 = lay["boxes"][key]
    if key == "address":  # the first line only
        y1 = min(y1, y0 + 3.6 * PPM)
    pad = rng.uniform(0.5, 1.2) * PPM
    box = np.array([[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad],
                    [x0 - pad, y1 + pad]])
    quad = _apply_h(h_edge, box) - 0.5
    H, W = img.shape[:2]
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.round(quad * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    ring = cv2.dilate(mask, np.ones((9, 9), np.uint8)) & ~cv2.dilate(mask, np.ones((3, 3),
                                                                                   np.uint8))
    around = img[ring > 0].astype(np.float32)
    gray = around.mean(1)
    paper = np.median(around[gray >= np.percentile(gray, 60)], axis=0)
    inside = img[mask > 127].astype(np.float32)
    ink = np.median(inside[inside.mean(1) <= np.percentile(inside.mean(1), 5)], axis=0)
    # The cover: flat paper colour, with a little noise when the forger is careful.
    patch = np.empty((H, W, 3), np.float32)
    patch[:] = paper
    care = 1 - strength
    patch += rng.normal(0, 1.5 * care + 0.3, (H, W, 1)).astype(np.float32)
    m = (mask.astype(np.float32) / 255)[..., None]
    out = img.astype(np.float32) * (1 - m) + patch * m
    img[:] = np.clip(out, 0, 255).astype(np.uint8)
    # The new text, in another font, a different size and ink, maybe off the baseline.
    text = _new_text(key, ident, rng)
    fams = _available_cjk()
    fam = F.CJK_FAMILIES[fams[int(rng.integers(len(fams)))]][int(rng.integers(2))]
    size_f = 1 + float(rng.choice([-1, 1])) * (0.04 + 0.2 * strength)
    height = (y1 - y0) * 0.82 * size_f
    size = F.size_for_height(fam, height)
    fnt = F.font(fam, size)
    cw, ch = int(x1 - x0 + 8 * PPM), int((y1 - y0) * 2 + 4 * PPM)
    canvas = Image.new("L", (cw, ch), 0)
    from PIL import ImageDraw

    shift = (rng.uniform(-1, 1) * 0.6 * strength) * PPM
    ImageDraw.Draw(canvas).text((2 * PPM, ch / 2 + shift), text, font=fnt, fill=255, anchor="lm")
    a = np.asarray(canvas, np.float32) / 255
    ink_new = np.clip(ink + rng.uniform(-1, 1, 3) * (8 + 40 * strength), 0, 255)
    rgba = np.empty((ch, cw, 4), np.uint8)
    rgba[..., :3] = np.clip(ink_new, 0, 255).astype(np.uint8)[None, None]
    rgba[..., 3] = (a * 255).astype(np.uint8)
    # Canvas pixel centres -> card pixel edges -> photo pixel centres.
    t = np.array([[1, 0, x0 - 2 * PPM + 0.5], [0, 1, (y0 + y1) / 2 - ch / 2 + 0.5], [0, 0, 1]])
    to_photo = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ h_edge @ t
    _paste(img, rgba, to_photo)
    return {"field": key, "font": fam.family, "size_factor": round(size_f, 3),
            "shift_mm": round(shift / PPM, 2), "text": text}


# --------------------------------------------------------------------------- the case


def _labels(condition: str) -> dict[str, bool]:
    skip = UNDETERMINED.get(condition, frozenset())
    return {a: a == condition for a in ALERTS if a not in skip}


def make_alert_photo(seed: int, condition: str, strength: float = 1.0,
                     side: str = "front") -> Case:
    """One reproducible labelled photo: the same arguments give the same bytes.

    ``condition`` is an alert name or a hard negative (:data:`CONDITIONS`);
    ``strength`` in [0, 1] (ignored by the hard negatives); ``side`` 'front' or 'back'
    (for ``interim``: which face of the temporary card).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    if side not in ("front", "back"):
        raise ValueError("side must be 'front' or 'back'")
    strength = float(np.clip(strength, 0.0, 1.0))
    ident = random_identity(np.random.default_rng([seed, 0]))
    # The strength is not in the stream: one seed is one card and scene at every strength.
    tag = zlib.crc32(f"alert/{condition}/{side}".encode())
    rng = np.random.default_rng([seed, 2, tag])
    card, lay = _render(ident, rng, side, interim=condition == "interim")
    spec = _legit_spec()
    params: dict[str, Any] = {"condition": condition, "strength": round(strength, 4)}
    software: str | None = None

    if condition == "clean":
        spec = dict(PRESETS["clean"])
    elif condition == "lowlight":
        spec = dict(PRESETS["lowlight"])
    elif condition == "mild":
        spec = dict(_MILD)
    elif condition == "texture":
        spec = {**_legit_spec(), "background": "texture", "coverage": (0.3, 0.5)}
    elif condition == "glare_mild":
        spec = dict(PRESETS["glare_mild"])
    elif condition == "tight":
        spec = {**_legit_spec(), "rotation": (-3.0, 3.0), "coverage": (0.6, 0.85)}

    if condition == "copy":
        sheet, sheet_m, info = _photocopy(card, rng, strength)
        params["copy"] = info
        if rng.random() < 0.3:  # a flat scan: the sheet is the image
            scale = rng.uniform(1200, 1700) / max(sheet.shape[:2])
            img = cv2.resize(sheet[..., :3], None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_AREA)
            h_edge = np.diag([scale, scale, 1.0]) @ sheet_m
            noise, quality = 1.0, int(rng.integers(80, 95))
            params["copy"]["medium"] = "scan"
        else:
            photo, noise, quality = _shoot([sheet], rng, spec, coverage=(0.55, 0.85))
            img, h_edge = photo.image, photo.homographies[0] @ sheet_m
            params.update(photo.params)
            params["copy"]["medium"] = "photo"
    elif condition == "reproduce":
        inner = {**spec, "coverage": (0.45, 0.7), "blur_sigma": 0.0, "shadow": 0.0}
        photo, _n, _q = _shoot([card], rng, inner, out_size=int(rng.integers(700, 1000)))
        img, to_photo, info = _screen_capture(photo.image, rng, strength)
        h_edge = to_photo @ photo.homographies[0]
        noise, quality = float(rng.uniform(1.5, 5.0)), int(rng.integers(75, 95))
        params["reproduce"] = info
    else:
        overrides: dict[str, Any] = {}
        if condition == "border_integrity":
            overrides["coverage"] = (0.55, 0.8)
        photo, noise, quality = _shoot([card], rng, spec, **overrides)
        img, h_edge = photo.image, photo.homographies[0]
        params.update(photo.params)
        h_mm = _mm_to_px(h_edge)
        text_px = _text_height_px(h_mm)
        if condition == "blur":
            params["blur"] = _blur(img, rng, 0.10 + 0.08 * strength, text_px)
        elif condition == "blur_slight":
            params["blur"] = _blur(img, rng, rng.uniform(0.02, 0.05), text_px)
        elif condition == "glare":
            params["glare_spot"] = _glare(img, rng, h_mm, side, 1.0 + 0.6 * strength,
                                          rng.uniform(12, 16) + 8 * strength)
        elif condition == "blocking_within_border":
            params["occluder"] = _occlude(img, rng, h_mm, 0.03 + 0.14 * strength)
        elif condition == "border_integrity":
            quad = _apply_h(h_mm, _card_mm_quad())
            img, shift, params["cut"] = _border_cut(img, rng, quad, 2.5 + 17.5 * strength)
            h_edge = shift @ h_edge
        elif condition == "tampering":
            if rng.random() < 0.3:
                software = _EDITORS[int(rng.integers(len(_EDITORS)))]
                params["tampering"] = {"kind": "exif", "software": software}
            else:
                img = _sensor_noise(img, rng, noise)
                _, img = _jpeg(img, quality)  # the original photo, as saved by the camera
                noise = 0.0
                info = _retype(img, rng, h_edge, lay, side, ident, strength)
                params["tampering"] = {"kind": "retype", **info}
                quality = int(rng.integers(80, 96))  # saved again by the editor
        elif condition == "tight":
            quad = _apply_h(h_mm, _card_mm_quad())
            img, shift, params["crop"] = _tight_crop(img, rng, quad)
            h_edge = shift @ h_edge
        elif condition == "phone_exif":
            software = _PHONES[int(rng.integers(len(_PHONES)))]
            params["software"] = software

    img = _sensor_noise(img, rng, noise)
    data, image = _jpeg(img, quality)
    if software is not None:
        data = _with_software(data, software)
    params.update(noise_sigma=round(noise, 2), jpeg_quality=quality,
                  size=[int(image.shape[1]), int(image.shape[0])])

    quad = _apply_h(h_edge, _rect(card.shape[1], card.shape[0])) - 0.5
    keys = (("name", "sex", "ethnicity", "birth", "address", "number") if side == "front"
            else ("issue", "valid_from", "valid_to"))
    boxes = lay["boxes"]
    locs = {k: _box_quad(h_edge, boxes[k]) for k in keys if k in boxes}
    portrait = _box_quad(h_edge, boxes["portrait"]) if "portrait" in boxes else None
    expected = ident.to_vendor_fields(side)
    if condition == "interim" and side == "back":
        expected = {"issue": ident.issue, "valid_from": lay["valid_from"].isoformat(),
                    "valid_to": lay["valid_to"].isoformat()}
    return Case(image=image, image_bytes=data, quads=[quad], identity=ident, side=side,
                expected=expected, preset=f"alert:{condition}", params=params,
                text_locations=locs, portrait_location=portrait, labels=_labels(condition))
