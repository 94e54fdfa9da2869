"""Font discovery and caching for the synthetic cards.

Fonts are looked up by file name under the usual font directories, and ``.ttc``
collections are opened at the face whose family name matches (the Simplified Chinese
face), so that the glyph shapes are the ones a mainland card would use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "CJK_FAMILIES",
    "MONO_FAMILIES",
    "LATIN_FAMILIES",
    "FontFace",
    "available",
    "font",
    "has_glyph",
    "size_for_height",
]

_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    os.path.expanduser("~/.fonts"),
    os.path.expanduser("~/.local/share/fonts"),
)


@dataclass(frozen=True)
class FontFace:
    file: str  # file name, found under the font directories
    family: str  # family name of the face inside a .ttc (or of the file)
    fake_bold: bool = False  # no bold file exists: thicken with a stroke


# family key -> (regular, bold)
CJK_FAMILIES: dict[str, tuple[FontFace, FontFace]] = {
    "noto_sans": (FontFace("NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),
                  FontFace("NotoSansCJK-Bold.ttc", "Noto Sans CJK SC")),
    "noto_serif": (FontFace("NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC"),
                   FontFace("NotoSerifCJK-Bold.ttc", "Noto Serif CJK SC")),
    "wqy_microhei": (FontFace("wqy-microhei.ttc", "WenQuanYi Micro Hei"),
                     FontFace("wqy-microhei.ttc", "WenQuanYi Micro Hei", True)),
    "wqy_zenhei": (FontFace("wqy-zenhei.ttc", "WenQuanYi Zen Hei"),
                   FontFace("wqy-zenhei.ttc", "WenQuanYi Zen Hei", True)),
    "uming": (FontFace("uming.ttc", "AR PL UMing CN"),
              FontFace("uming.ttc", "AR PL UMing CN", True)),
    "ukai": (FontFace("ukai.ttc", "AR PL UKai CN"),
             FontFace("ukai.ttc", "AR PL UKai CN", True)),
}  # fmt: skip

MONO_FAMILIES: dict[str, tuple[FontFace, FontFace]] = {
    "dejavu_mono": (FontFace("DejaVuSansMono.ttf", "DejaVu Sans Mono"),
                    FontFace("DejaVuSansMono-Bold.ttf", "DejaVu Sans Mono")),
    "liberation_mono": (FontFace("LiberationMono-Regular.ttf", "Liberation Mono"),
                        FontFace("LiberationMono-Bold.ttf", "Liberation Mono")),
    "freemono": (FontFace("FreeMono.ttf", "FreeMono"),
                 FontFace("FreeMonoBold.ttf", "FreeMono")),
    "noto_mono_cjk": (FontFace("NotoSansCJK-Regular.ttc", "Noto Sans Mono CJK SC"),
                      FontFace("NotoSansCJK-Bold.ttc", "Noto Sans Mono CJK SC")),
    "inconsolata": (FontFace("Inconsolata.otf", "Inconsolata"),
                    FontFace("Inconsolata.otf", "Inconsolata", True)),
}  # fmt: skip

# For clutter text in photo backgrounds.
LATIN_FAMILIES: dict[str, tuple[FontFace, FontFace]] = {
    "dejavu_sans": (FontFace("DejaVuSans.ttf", "DejaVu Sans"),
                    FontFace("DejaVuSans-Bold.ttf", "DejaVu Sans")),
    "liberation_serif": (FontFace("LiberationSerif-Regular.ttf", "Liberation Serif"),
                         FontFace("LiberationSerif-Bold.ttf", "Liberation Serif")),
    "liberation_sans": (FontFace("LiberationSans-Regular.ttf", "Liberation Sans"),
                        FontFace("LiberationSans-Bold.ttf", "Liberation Sans")),
}  # fmt: skip

FALLBACK_CJK = CJK_FAMILIES["noto_sans"][0]


@cache
def _find_file(name: str) -> str | None:
    for root in _FONT_DIRS:
        if not os.path.isdir(root):
            continue
        direct = Path(root) / name
        if direct.is_file():
            return str(direct)
        for path in sorted(Path(root).rglob(name)):
            return str(path)
    return None


@cache
def _face_index(path: str, family: str) -> int:
    """Index of the face named ``family`` in a collection (0 for plain font files)."""
    if not path.lower().endswith(".ttc"):
        return 0
    index = 0
    while True:
        try:
            f = ImageFont.truetype(path, 12, index=index)
        except OSError:
            return 0
        if f.getname()[0] == family:
            return index
        index += 1


def available(families: dict[str, tuple[FontFace, FontFace]]) -> list[str]:
    """Keys of the families whose regular face is installed, in a stable order."""
    return [k for k, (reg, _) in families.items() if _find_file(reg.file)]


@lru_cache(maxsize=512)
def font(face: FontFace, size_px: int) -> ImageFont.FreeTypeFont:
    path = _find_file(face.file)
    if path is None:
        path = _find_file(FALLBACK_CJK.file)
        if path is None:
            raise RuntimeError(f"font {face.file} not found and no CJK fallback installed")
        face = FALLBACK_CJK
    # The basic layout engine renders the same on every machine (no raqm dependency).
    return ImageFont.truetype(
        path, max(4, int(size_px)), index=_face_index(path, face.family),
        layout_engine=ImageFont.Layout.BASIC,
    )


@cache
def _ink_ratio(face: FontFace, ref: str) -> float:
    f = font(face, 200)
    box = f.getbbox(ref, anchor="ls")
    return max(1, box[3] - box[1]) / 200.0


def size_for_height(face: FontFace, height_px: float, ref: str = "国", nominal: float = 0.88
                    ) -> int:
    """Font size giving ``ref`` the ink height a typical font has at ``height_px``.

    ``nominal`` is the ink/em ratio of that typical font, so the call means "a font size
    of height_px, corrected for fonts whose glyphs are unusually small or large".
    """
    return max(4, round(height_px * nominal / _ink_ratio(face, ref)))


def _mask_bytes(face: FontFace, ch: str) -> bytes:
    img = Image.new("L", (48, 48))
    ImageDraw.Draw(img).text((4, 4), ch, font=font(face, 32), fill=255)
    return img.tobytes()


@cache
def _notdef_mask(face: FontFace) -> bytes:
    return _mask_bytes(face, "\U000f0000")  # a private-use code point: always .notdef


@lru_cache(maxsize=65536)
def has_glyph(face: FontFace, ch: str) -> bool:
    """Whether ``face`` has its own glyph for ``ch`` (not the .notdef box)."""
    if ch.isspace():
        return True
    m = _mask_bytes(face, ch)
    return any(m) and m != _notdef_mask(face)
