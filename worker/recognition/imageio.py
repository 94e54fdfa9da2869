"""Decoding the caller's image safely, and encoding the images we send back.

Everything a client sends is hostile until proven otherwise: this module is the only
place that turns request bytes into pixels, and it enforces the contract's image
limits (section 1) with the contract's error codes (section 2):

- ``AIS.0102``: not base64, a ``data:`` prefix, not PNG/JPEG/BMP/TIFF, or image data
  that is corrupt or truncated.
- ``AIS.0103``: base64 over 10 MB, a side under 15 px or over 8192 px, a decompression
  bomb (checked from the header, before any pixel memory is allocated), or running out
  of memory while decoding.

No exception other than :class:`~idcard.errors.ServiceError` leaves
:func:`decode_base64_image` or :func:`load_image`.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import (
    BmpImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from idcard.b64 import MAX_BASE64_CHARS, decode_image_b64
from idcard.errors import ErrorCode, ServiceError

__all__ = [
    "MAX_BASE64_CHARS",
    "MAX_SIDE",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "LoadedImage",
    "decode_base64_image",
    "encode_jpeg_base64",
    "load_image",
]

#: Contract section 1: "each side 15–8192 px".
MIN_SIDE = 15
MAX_SIDE = 8192
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

_SUPPORTED_TEXT = "PNG, JPEG, BMP or TIFF"
_CORRUPT_MSG = "image data is corrupt or truncated"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_PREFIXES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

# We never want Pillow to pad a cut-off image with grey and call it a success. This is
# the library default, set explicitly so the intent is visible (load_image re-checks
# it on every call in case other code flipped it, see _ensure_strict_pillow).
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is ambiguous
class LoadedImage:
    """A decoded image, ready for recognition.

    ``bgr`` is H×W×3 ``uint8``, C-contiguous and writeable, with the orientation tag
    already applied; ``original_size`` is its (width, height), i.e. as displayed.
    ``orientation`` is the EXIF/TIFF orientation (1–8) that was applied — what a
    caller needs to map points back to the stored, un-rotated pixel grid.
    ``software`` is the program that last wrote the file as its metadata says (EXIF
    ``Software``, else XMP ``CreatorTool``), or None; the tampering alert reads it.
    ``jpeg_quant`` is a JPEG's luma quantization table (64 steps, natural row-major
    order, as Pillow gives it), or None for other formats (and CMYK JPEGs): with it the
    tampering alert recomputes the quantized DCT coefficients of the stored 8×8 blocks.
    """

    bgr: np.ndarray
    format: str
    exif_transposed: bool
    original_size: tuple[int, int]
    orientation: int = 1
    software: str | None = None
    jpeg_quant: tuple[int, ...] | None = None


def _error(code: ErrorCode, message: str) -> ServiceError:
    return ServiceError(code, message)


# --------------------------------------------------------------------------- base64


def decode_base64_image(b64: str) -> bytes:
    """Decode the request's ``image`` field into raw image bytes.

    The rules live in :mod:`idcard.b64`, shared with the API, which checks the field
    before it creates a job.
    """
    return decode_image_b64(b64)

def load_image(data: bytes) -> LoadedImage:
    """Decode PNG/JPEG/BMP/TIFF bytes into an oriented 8-bit BGR image.

    TIFF: the first page; animated PNG: the first frame. Transparent images are
    composited on white. Raises only :class:`ServiceError` (``AIS.0102``/``AIS.0103``).
    """
    try:
        return _load_image(data)
    except ServiceError:
        raise
    except MemoryError:
        raise _error(ErrorCode.IMAGE_SIZE, "image is too large to decode") from None
    except Image.DecompressionBombError:
        raise _error(
            ErrorCode.IMAGE_SIZE, "image declares too many pixels (decompression bomb)"
        ) from None
    except ValueError as exc:
        if "Decompressed data too large" in str(exc):
            # A zlib bomb in a PNG text/ICC chunk (Pillow's MAX_TEXT_CHUNK guard).
            raise _error(
                ErrorCode.IMAGE_SIZE, "image metadata decompresses to too much data"
            ) from None
        raise _error(ErrorCode.UNSUPPORTED_IMAGE, _CORRUPT_MSG) from None
    except Exception:
        # Pillow reports broken files with a zoo of exception types (OSError,
        # SyntaxError, ValueError, struct.error, EOFError, IndexError, ...); to the
        # caller they all mean the same thing.
        raise _error(ErrorCode.UNSUPPORTED_IMAGE, _CORRUPT_MSG) from None


def _load_image(data: bytes) -> LoadedImage:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(ErrorCode.UNSUPPORTED_IMAGE, "image must be bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    fmt = _sniff_format(data)
    if fmt is None:
        raise _error(
            ErrorCode.UNSUPPORTED_IMAGE,
            f"unsupported image format; the image must be {_SUPPORTED_TEXT}",
        )
    if fmt == "PNG":
        # Pillow does not verify IDAT checksums, so a damaged PNG would decode to
        # garbage pixels without complaint; walk the chunks ourselves (cheap: crc32).
        _check_png_chunks(data)
    _ensure_strict_pillow()

    im = _open_header_only(fmt, data)
    try:
        _check_dimensions(im)
        if fmt == "TIFF":
            # Pillow applies a TIFF's orientation tag itself while loading (and then
            # drops the tag): read it from the header only to report it truthfully.
            applied = _tiff_orientation(im)
            orientation = 1
        # The pixels are decoded here, inside load_image's try, so truncation surfaces
        # as an exception rather than as a half-grey picture.
        im.load()
        if fmt != "TIFF":
            orientation = applied = _exif_orientation(im)
        software = _software(im)
        quant = _jpeg_luma_quant(im) if fmt == "JPEG" else None
        pixels, to_bgr = _pixels_8bit(im)
    finally:
        # Release Pillow's copy of the pixels before OpenCV makes the final one: at
        # 8192x8192 that is ~270 MB less peak memory per worker.
        im.close()
    bgr = pixels if to_bgr is None else cv2.cvtColor(pixels, to_bgr)
    del pixels
    if orientation in _ORIENT:
        # Rotating the final 3-byte BGR array in OpenCV is cheaper than transposing
        # Pillow's 4-byte-per-pixel image (measured 7 vs 10 ms at 2000x1500), and
        # phone photos (orientation 6) are the common rotated case.
        bgr = _ORIENT[orientation](bgr)
    height, width = bgr.shape[:2]
    transposed = applied in _ORIENT
    return LoadedImage(
        bgr=bgr,
        format=fmt,
        exif_transposed=transposed,
        original_size=(width, height),
        orientation=applied if transposed else 1,
        software=software,
        jpeg_quant=quant,
    )


def _sniff_format(data: bytes) -> str | None:
    """The format by magic bytes, never by what the caller claims."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(_TIFF_PREFIXES):
        return "TIFF"
    return None


# The plugin classes are instantiated directly instead of going through Image.open:
# Image.open runs Pillow's own decompression-bomb check against the *global*
# Image.MAX_IMAGE_PIXELS and may emit a DecompressionBombWarning through the global
# warnings machinery. Our limits are stricter (8192 px a side), so we check the header
# size ourselves and leave both globals alone for the rest of the process.
_FACTORIES: dict[str, Any] = {
    "PNG": PngImagePlugin.PngImageFile,
    # JpegImageFile, not jpeg_factory: an MPO (multi-picture JPEG) is read as its
    # first picture, like a multi-page TIFF.
    "JPEG": JpegImagePlugin.JpegImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
}


def _jpeg_luma_quant(im: ImageFile.ImageFile) -> tuple[int, ...] | None:
    """A YCbCr or greyscale JPEG's luma quantization table (64 steps, natural order)."""
    if im.mode not in ("L", "RGB"):
        return None
    table = (getattr(im, "quantization", None) or {}).get(0)
    if table is None or len(table) != 64:
        return None
    steps = tuple(int(v) for v in table)
    # A step of 0 is no quantization (the standard forbids it): nothing to divide by.
    return steps if min(steps) >= 1 else None


def _open_header_only(fmt: str, data: bytes) -> ImageFile.ImageFile:
    """Parse the header (lazy: no pixel memory yet)."""
    try:
        return _FACTORIES[fmt](io.BytesIO(data))
    except (SyntaxError, struct.error, IndexError, TypeError, EOFError) as exc:
        # The magic matched but the header did not parse.
        raise _error(
            ErrorCode.UNSUPPORTED_IMAGE,
            f"not a valid {fmt} image ({_CORRUPT_MSG}); the image must be {_SUPPORTED_TEXT}",
        ) from exc


def _check_dimensions(im: ImageFile.ImageFile) -> None:
    sizes = [im.size]
    # TIFF allocates by its stored (pre-orientation) size: same sides, maybe swapped,
    # but check what Pillow will actually allocate.
    stored = getattr(im, "_tile_size", None)
    if isinstance(stored, tuple) and len(stored) == 2:
        sizes.append(stored)
    for width, height in sizes:
        if MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE:
            continue
        bomb = width * height > MAX_SIDE * MAX_SIDE
        raise _error(
            ErrorCode.IMAGE_SIZE,
            f"image is {width}x{height} px"
            + (" (too many pixels to decode)" if bomb else "")
            + f"; each side must be {MIN_SIDE}-{MAX_SIDE} px",
        )


def _check_png_chunks(data: bytes) -> None:
    """Verify every chunk's CRC up to IEND; a missing IEND means truncation."""
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    end = len(data)
    while True:
        if pos + 8 > end:
            raise _error(ErrorCode.UNSUPPORTED_IMAGE, _CORRUPT_MSG)
        length, ctype = struct.unpack_from(">I4s", data, pos)
        body_end = pos + 8 + length
        if length > 0x7FFFFFFF or body_end + 4 > end:
            raise _error(ErrorCode.UNSUPPORTED_IMAGE, _CORRUPT_MSG)
        (stored_crc,) = struct.unpack_from(">I", data, body_end)
        if zlib.crc32(view[pos + 4 : body_end]) != stored_crc:
            raise _error(ErrorCode.UNSUPPORTED_IMAGE, _CORRUPT_MSG)
        pos = body_end + 4
        if ctype == b"IEND":
            return


def _ensure_strict_pillow() -> None:
    # A global flag; if some other code flipped it, truncated uploads would pass as
    # grey-padded images. Put the library default back rather than trust it.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the operation that turns the stored pixels upright
# (the same mapping as PIL.ImageOps.exif_transpose).
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),  # mirrored left-right
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),  # mirrored top-bottom
    5: cv2.transpose,
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),  # transverse
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _tiff_orientation(im: Image.Image) -> int:
    try:
        orientation = im.tag_v2.get(_ORIENTATION_TAG, 1)  # type: ignore[attr-defined]
    except Exception:
        return 1
    return orientation if isinstance(orientation, int) else 1


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 (as stored) when absent, invalid or unreadable."""
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        # Malformed EXIF is common from cheap cameras/phones; the pixels are still fine.
        return 1
    return orientation if isinstance(orientation, int) and orientation in _ORIENT else 1


_SOFTWARE_TAG = 0x0131
_MAX_SOFTWARE_CHARS = 200
_XMP_CREATOR = re.compile(rb"CreatorTool(?:>|=\")([^<\"]{1,200})")


def _software(im: Image.Image) -> str | None:
    """EXIF ``Software``, else XMP ``CreatorTool``: None when absent or unreadable."""
    try:
        value = im.getexif().get(_SOFTWARE_TAG)
    except Exception:
        value = None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not (isinstance(value, str) and value.strip("\x00 ")):
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "replace")
        match = _XMP_CREATOR.search(xmp) if isinstance(xmp, bytes) else None
        value = match.group(1).decode("utf-8", "replace") if match else None
    if not isinstance(value, str):
        return None
    if not value.isascii():
        # EXIF ASCII fields are read as Latin-1; editors write UTF-8 (美图秀秀) there.
        try:
            value = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    value = value.strip("\x00 ").strip()
    return value[:_MAX_SOFTWARE_CHARS] or None


def _pixels_8bit(im: Image.Image) -> tuple[np.ndarray, int | None]:
    """8-bit pixels out of Pillow, and the OpenCV code that makes them BGR.

    The code is None when the array is already BGR. Exactly one copy out of Pillow
    for the common modes; any swap is left to the caller, after Pillow's buffer is freed.
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        if im.width * im.height > _STRIPED_COPY_PIXELS:
            return _rgb_to_bgr_in_strips(im), None
        # Hot path (every JPEG photo): np.asarray is one copy, cvtColor one swap.
        return np.asarray(im), cv2.COLOR_RGB2BGR
    if mode == "L" and "transparency" not in im.info:
        return np.asarray(im), cv2.COLOR_GRAY2BGR
    if mode.startswith("I;16"):
        # 16-bit grey: keep the high byte (Pillow's own convert("L") would clip).
        gray16 = np.asarray(im).astype(np.uint16, copy=False)
        return (gray16 >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR
    if mode == "I":
        # 32-bit integer grey: in practice 16-bit data (PNG/TIFF) widened by Pillow.
        gray32 = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        return (gray32 >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR
    if mode == "F":
        gray = np.clip(np.nan_to_num(np.asarray(im)), 0, 255).astype(np.uint8)
        return gray, cv2.COLOR_GRAY2BGR
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        return _composite_on_white(np.asarray(im.convert("RGBA"))), cv2.COLOR_RGB2BGR
    # P without transparency, 1, CMYK, YCbCr, ...: Pillow knows the maths.
    try:
        rgb = im.convert("RGB")
    except ValueError:
        raise _error(
            ErrorCode.UNSUPPORTED_IMAGE, f"unsupported colour mode {mode!r} in the image"
        ) from None
    return np.asarray(rgb), cv2.COLOR_RGB2BGR


# np.asarray(im) goes through Image.tobytes(), which briefly holds the pixels twice
# (encoded chunks plus their join) next to Pillow's own 4-byte-per-pixel buffer: ~640 MB
# peak at 8192x8192. Above this size, copy strip by strip straight into the BGR result
# instead (~450 MB peak); below it the single big copy is about 1 ms faster.
_STRIPED_COPY_PIXELS = 4096 * 4096
_STRIP_ROWS = 256


def _rgb_to_bgr_in_strips(im: Image.Image) -> np.ndarray:
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        # Pillow packs RGB as BGR itself ("raw" encoder, "BGR" raw mode).
        strip = im.crop((0, top, width, bottom)).tobytes("raw", "BGR")
        out[top:bottom] = np.frombuffer(strip, np.uint8).reshape(bottom - top, width, 3)
    return out


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    # A transparent background would otherwise become black, and dark text on black
    # is unreadable; cut-out card scans are meant to be seen on white.
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


# --------------------------------------------------------------------------- encoding


def encode_jpeg_base64(bgr: np.ndarray, quality: int = 90) -> str:
    """Encode a BGR (or grey) ``uint8`` image as plain base64 JPEG (no ``data:`` prefix).

    Used for ``adjusted_image`` and ``portrait_image``. Bad arguments are programming
    errors (``ValueError``); an encoder failure is ``AIS.0105``.
    """
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8:
        raise ValueError("bgr must be a uint8 numpy array")
    if not (bgr.ndim == 2 or (bgr.ndim == 3 and bgr.shape[2] in (1, 3))):
        raise ValueError(f"bgr must be HxW or HxWx3, got shape {bgr.shape}")
    if bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise ValueError("cannot encode an empty image")
    if not 1 <= int(quality) <= 100:
        raise ValueError("quality must be between 1 and 100")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise _error(ErrorCode.RECOGNITION_FAILED, "could not encode the output image")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def stretch_contrast(crop: np.ndarray) -> np.ndarray:
    """Spread a dim or washed-out line over the full brightness range.

    The recogniser was trained on well-exposed text; a line photographed in low light
    uses a sliver of the range.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    lo, hi = np.percentile(gray, (1, 99))
    if hi - lo < 8 or (lo < 30 and hi > 225):
        return crop
    scale = 255.0 / (hi - lo)
    return cv2.convertScaleAbs(crop, alpha=scale, beta=-lo * scale)
