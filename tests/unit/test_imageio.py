"""Tests for worker.recognition.imageio: every input is generated here, no fixtures on disk."""

from __future__ import annotations

import base64
import io
import resource
import struct
import warnings
import zlib
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from idcard.errors import ErrorCode, ServiceError
from worker.recognition import imageio
from worker.recognition.imageio import (
    MAX_BASE64_CHARS,
    LoadedImage,
    decode_base64_image,
    encode_jpeg_base64,
    load_image,
)

AIS_0101 = ErrorCode.INVALID_PARAMETER
AIS_0102 = ErrorCode.UNSUPPORTED_IMAGE
AIS_0103 = ErrorCode.IMAGE_SIZE

# ----------------------------------------------------------------------------- helpers


def _save(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _random_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _noisy_photo(width: int, height: int) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, not like flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    noise = np.random.default_rng(1).integers(0, 40, base.shape)
    return cv2.GaussianBlur((base + noise).clip(0, 255).astype(np.uint8), (5, 5), 0)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _crafted_png(width: int, height: int) -> bytes:
    """A structurally valid PNG (good CRCs) that declares width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _assert_code(exc_info: pytest.ExceptionInfo[ServiceError], code: ErrorCode) -> None:
    assert exc_info.value.code is code, exc_info.value


def _assert_valid(result: LoadedImage) -> None:
    assert result.bgr.dtype == np.uint8
    assert result.bgr.ndim == 3 and result.bgr.shape[2] == 3
    assert result.bgr.flags.c_contiguous and result.bgr.flags.writeable
    height, width = result.bgr.shape[:2]
    assert result.original_size == (width, height)
    assert result.format in ("PNG", "JPEG", "BMP", "TIFF")


# ----------------------------------------------------------------------------- base64


def test_base64_round_trip() -> None:
    payload = _save(Image.new("RGB", (20, 20)), "PNG")
    assert decode_base64_image(base64.b64encode(payload).decode()) == payload


def test_base64_with_newlines_and_spaces_is_accepted() -> None:
    payload = bytes(range(256)) * 10
    wrapped = base64.encodebytes(payload).decode()  # 76-column lines with \n
    assert "\n" in wrapped
    assert decode_base64_image(wrapped) == payload
    assert decode_base64_image(wrapped.replace("\n", "\r\n")) == payload
    assert decode_base64_image("  " + wrapped + " \t") == payload


def test_base64_missing_padding_is_tolerated() -> None:
    payload = b"abcde"  # encodes with one '='
    assert decode_base64_image(base64.b64encode(payload).decode().rstrip("=")) == payload


@pytest.mark.parametrize(
    "prefix", ["data:image/jpeg;base64,", "data:image/png;base64,", "  DATA:image/png;base64,"]
)
def test_base64_data_prefix_rejected(prefix: str) -> None:
    body = base64.b64encode(_save(Image.new("RGB", (20, 20)), "PNG")).decode()
    with pytest.raises(ServiceError) as exc_info:
        decode_base64_image(prefix + body)
    _assert_code(exc_info, AIS_0102)
    assert "prefix" in exc_info.value.message


@pytest.mark.parametrize(
    "text", ["not base64!!", "abc$def", "QUJD\x00RA==", "QUJDRA==QUJD", "A", "中文字符"]
)
def test_invalid_base64_rejected(text: str) -> None:
    with pytest.raises(ServiceError) as exc_info:
        decode_base64_image(text)
    _assert_code(exc_info, AIS_0102)


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_empty_base64_rejected(text: str) -> None:
    with pytest.raises(ServiceError) as exc_info:
        decode_base64_image(text)
    _assert_code(exc_info, AIS_0102)


def test_non_string_base64_is_invalid_parameter() -> None:
    with pytest.raises(ServiceError) as exc_info:
        decode_base64_image(12345)  # type: ignore[arg-type]
    _assert_code(exc_info, AIS_0101)


def test_base64_over_10mb_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded a base64 string that is over the limit")

    import idcard.b64

    monkeypatch.setattr(idcard.b64, "_b64decode", must_not_decode)
    for length in (MAX_BASE64_CHARS + 4, 3 * MAX_BASE64_CHARS):
        with pytest.raises(ServiceError) as exc_info:
            decode_base64_image("A" * length)
        _assert_code(exc_info, AIS_0103)


def test_base64_at_the_limit_is_accepted() -> None:
    text = "A" * MAX_BASE64_CHARS  # 10 MB exactly, a multiple of 4
    assert len(decode_base64_image(text)) == MAX_BASE64_CHARS // 4 * 3


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_round_trip_preserves_pixels(fmt: str) -> None:
    rgb = _random_rgb(41, 29)
    result = load_image(_save(Image.fromarray(rgb), fmt))
    _assert_valid(result)
    assert result.format == fmt
    assert result.original_size == (41, 29)
    assert not result.exif_transposed
    np.testing.assert_array_equal(result.bgr, rgb[..., ::-1])


def test_large_image_strip_copy_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Huge RGB images are copied strip by strip (less peak memory); same pixels."""
    rgb = _random_rgb(37, 600)  # 600 rows: two full 256-row strips and a partial one
    data = _save(Image.fromarray(rgb), "PNG")
    monkeypatch.setattr(imageio, "_STRIPED_COPY_PIXELS", 0)
    result = load_image(data)
    _assert_valid(result)
    np.testing.assert_array_equal(result.bgr, rgb[..., ::-1])


def test_compressed_tiff_round_trip() -> None:
    rgb = _random_rgb(40, 30)
    result = load_image(_save(Image.fromarray(rgb), "TIFF", compression="tiff_deflate"))
    np.testing.assert_array_equal(result.bgr, rgb[..., ::-1])


def test_jpeg_round_trip() -> None:
    rgb = _noisy_photo(64, 48)
    result = load_image(_save(Image.fromarray(rgb), "JPEG", quality=95))
    _assert_valid(result)
    assert result.format == "JPEG"
    assert result.original_size == (64, 48)
    diff = np.abs(result.bgr.astype(int) - rgb[..., ::-1].astype(int))
    assert diff.mean() < 3


def test_multipage_tiff_uses_first_page() -> None:
    pages = [Image.new("RGB", (30, 20), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    result = load_image(data)
    assert result.bgr[0, 0].tolist() == [0, 0, 255]  # red, in BGR


def test_animated_png_uses_first_frame() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in ((0, 0, 255), (0, 255, 0))]
    data = _save(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    result = load_image(data)
    assert result.bgr[0, 0].tolist() == [255, 0, 0]  # blue, in BGR


# ----------------------------------------------------------------------------- orientation

# The EXIF definition (independent of Pillow): how to turn the picture as it should be
# displayed into the pixels a camera with that orientation tag would have stored.
_STORED_FROM_DISPLAYED = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],  # mirrored
    3: lambda d: d[::-1, ::-1],  # upside down
    4: lambda d: d[::-1, :],  # flipped vertically
    5: lambda d: d.transpose(1, 0, 2),  # transposed
    6: lambda d: np.rot90(d, 1),  # display = stored turned 90 deg clockwise
    7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),  # transverse
    8: lambda d: np.rot90(d, -1),  # display = stored turned 90 deg counter-clockwise
}


def _displayed_with_markers() -> np.ndarray:
    """60x40 landscape, grey, with a red block top-left and a blue block top-right."""
    img = np.full((40, 60, 3), 128, np.uint8)
    img[2:14, 2:14] = (255, 0, 0)
    img[2:14, 46:58] = (0, 0, 255)
    return img


def _assert_markers_upright(bgr: np.ndarray) -> None:
    assert bgr.shape == (40, 60, 3)
    top_left, top_right = bgr[8, 8].astype(int), bgr[8, 52].astype(int)
    bottom_left = bgr[32, 8].astype(int)
    assert top_left[2] > 200 and top_left[0] < 60, top_left  # red (BGR)
    assert top_right[0] > 200 and top_right[2] < 60, top_right  # blue (BGR)
    assert abs(bottom_left - 128).max() < 30, bottom_left  # plain grey


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation(orientation: int) -> None:
    stored = np.ascontiguousarray(_STORED_FROM_DISPLAYED[orientation](_displayed_with_markers()))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    result = load_image(data)
    _assert_valid(result)
    _assert_markers_upright(result.bgr)
    assert result.original_size == (60, 40)
    assert result.exif_transposed is (orientation != 1)
    assert result.orientation == orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_orientation(orientation: int) -> None:
    stored = np.ascontiguousarray(_STORED_FROM_DISPLAYED[orientation](_displayed_with_markers()))
    data = _save(Image.fromarray(stored), "TIFF", tiffinfo={0x0112: orientation})
    result = load_image(data)
    _assert_markers_upright(result.bgr)
    assert result.exif_transposed is True
    assert result.orientation == orientation


@pytest.mark.parametrize("orientation", [6, 8])
def test_png_exif_orientation(orientation: int) -> None:
    stored = np.ascontiguousarray(_STORED_FROM_DISPLAYED[orientation](_displayed_with_markers()))
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = load_image(_save(Image.fromarray(stored), "PNG", exif=exif.tobytes()))
    np.testing.assert_array_equal(result.bgr, _displayed_with_markers()[..., ::-1])
    assert result.exif_transposed is True


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow reports the bad EXIF
@pytest.mark.parametrize(
    "exif_block",
    [
        b"Exif\x00\x00" + b"\xde\xad\xbe\xef" * 8,  # garbage after the header
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD offset far past the end
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",  # absurd entry count
    ],
)
def test_broken_exif_does_not_crash(exif_block: bytes) -> None:
    rgb = _noisy_photo(40, 30)
    result = load_image(_save(Image.fromarray(rgb), "JPEG", exif=exif_block))
    _assert_valid(result)
    assert result.original_size == (40, 30)
    assert result.exif_transposed is False


# ----------------------------------------------------------------------------- corrupt data


def test_truncated_jpeg_rejected() -> None:
    data = _save(Image.fromarray(_noisy_photo(300, 200)), "JPEG", quality=90)
    with pytest.raises(ServiceError) as exc_info:
        load_image(data[: len(data) // 2])
    _assert_code(exc_info, AIS_0102)
    assert "corrupt or truncated" in exc_info.value.message


def test_truncated_jpeg_rejected_even_if_someone_enabled_truncated_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _save(Image.fromarray(_noisy_photo(300, 200)), "JPEG", quality=90)
    with pytest.raises(ServiceError) as exc_info:
        load_image(data[: len(data) // 2])
    _assert_code(exc_info, AIS_0102)


def test_png_with_bad_idat_crc_rejected() -> None:
    """Pixel data intact, only the IDAT checksum wrong: Pillow alone would accept it."""
    data = bytearray(_save(Image.fromarray(_random_rgb(40, 30)), "PNG"))
    idat = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, idat - 4)
    data[idat + 4 + length] ^= 0xFF  # first byte of the IDAT CRC
    with pytest.raises(ServiceError) as exc_info:
        load_image(bytes(data))
    _assert_code(exc_info, AIS_0102)
    assert "corrupt or truncated" in exc_info.value.message


def test_png_with_damaged_idat_data_rejected() -> None:
    data = bytearray(_save(Image.fromarray(_random_rgb(40, 30)), "PNG"))
    data[data.index(b"IDAT") + 10] ^= 0xFF  # one byte of compressed pixel data
    with pytest.raises(ServiceError) as exc_info:
        load_image(bytes(data))
    _assert_code(exc_info, AIS_0102)


def test_png_without_iend_is_truncated() -> None:
    data = _save(Image.fromarray(_random_rgb(40, 30)), "PNG")
    assert data.endswith(_png_chunk(b"IEND", b""))
    with pytest.raises(ServiceError) as exc_info:
        load_image(data[:-12])
    _assert_code(exc_info, AIS_0102)


def test_png_with_bad_header_crc_rejected() -> None:
    data = bytearray(_save(Image.fromarray(_random_rgb(40, 30)), "PNG"))
    data[8 + 8 + 13] ^= 0x01  # the IHDR CRC itself
    with pytest.raises(ServiceError) as exc_info:
        load_image(bytes(data))
    _assert_code(exc_info, AIS_0102)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_truncated_lossless_images_rejected(fmt: str) -> None:
    data = _save(Image.fromarray(_random_rgb(60, 40)), fmt)
    with pytest.raises(ServiceError) as exc_info:
        load_image(data[: len(data) * 2 // 3])
    _assert_code(exc_info, AIS_0102)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("width", "height"), [(1, 1), (14, 100), (100, 14), (8193, 20), (20, 8193)]
)
def test_side_out_of_range_rejected(width: int, height: int) -> None:
    data = _save(Image.new("RGB", (width, height), (10, 20, 30)), "PNG")
    with pytest.raises(ServiceError) as exc_info:
        load_image(data)
    _assert_code(exc_info, AIS_0103)
    assert f"{width}x{height}" in exc_info.value.message


@pytest.mark.parametrize(("width", "height"), [(15, 15), (8192, 15), (15, 8192)])
def test_side_at_the_limits_accepted(width: int, height: int) -> None:
    result = load_image(_save(Image.new("RGB", (width, height), (10, 20, 30)), "PNG"))
    assert result.original_size == (width, height)
    assert result.bgr[0, 0].tolist() == [30, 20, 10]


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
def test_small_images_rejected_in_every_format(fmt: str) -> None:
    with pytest.raises(ServiceError) as exc_info:
        load_image(_save(Image.new("RGB", (10, 10)), fmt))
    _assert_code(exc_info, AIS_0103)


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 10000), (100000, 16)])
def test_png_decompression_bomb_rejected_without_decoding(width: int, height: int) -> None:
    data = _crafted_png(width, height)
    assert len(data) < 200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ServiceError) as exc_info:
            load_image(data)
    _assert_code(exc_info, AIS_0103)
    assert f"{width}x{height}" in exc_info.value.message
    # ru_maxrss is in KiB on Linux; 1.6 GB of pixels would show up here.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100 * 1024
    # Our own check runs first, so Pillow never even warns about a bomb.
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_decompression_bomb_check_leaves_pillow_globals_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ServiceError):
        load_image(_crafted_png(20000, 20000))
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_patched_real_png_header_bomb() -> None:
    """A real small PNG whose IHDR is rewritten to 20000x20000, with a fixed CRC."""
    data = bytearray(_save(Image.fromarray(_random_rgb(20, 20)), "PNG"))
    struct.pack_into(">II", data, 16, 20000, 20000)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    with pytest.raises(ServiceError) as exc_info:
        load_image(bytes(data))
    _assert_code(exc_info, AIS_0103)


def test_declared_size_within_limits_but_no_data_is_corrupt_not_a_crash() -> None:
    with pytest.raises(ServiceError) as exc_info:
        load_image(_crafted_png(8192, 8192))
    _assert_code(exc_info, AIS_0102)


# ----------------------------------------------------------------------------- unsupported


def _gif() -> bytes:
    return _save(Image.new("RGB", (30, 30), (255, 0, 0)), "GIF")


def _webp() -> bytes:
    return _save(Image.new("RGB", (30, 30), (255, 0, 0)), "WEBP")


_MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(7).bytes(5000), id="random"),
        pytest.param(_MINIMAL_PDF, id="pdf"),
        pytest.param(b"hello, this is not an image\n" * 10, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
    ],
)
def test_unsupported_data_rejected(data: bytes) -> None:
    with pytest.raises(ServiceError) as exc_info:
        load_image(data)
    _assert_code(exc_info, AIS_0102)
    assert "PNG, JPEG, BMP or TIFF" in exc_info.value.message


@pytest.mark.parametrize("make", [_gif, _webp], ids=["gif", "webp"])
def test_real_but_unsupported_formats_rejected(make: Callable[[], bytes]) -> None:
    with pytest.raises(ServiceError) as exc_info:
        load_image(make())
    _assert_code(exc_info, AIS_0102)
    assert "PNG, JPEG, BMP or TIFF" in exc_info.value.message


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow reports the bad EXIF
def test_magic_without_valid_header_rejected() -> None:
    for data in (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0" + b"\x00" * 30,
        b"BM" + b"\x00" * 60,
        b"II*\x00" + b"\xff" * 40,
    ):
        with pytest.raises(ServiceError) as exc_info:
            load_image(data)
        _assert_code(exc_info, AIS_0102)


def test_unexpected_errors_are_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(Image.new("RGB", (20, 20)), "PNG")

    def boom(*args: object) -> None:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(imageio, "_pixels_8bit", boom)
    with pytest.raises(ServiceError) as exc_info:
        load_image(data)
    _assert_code(exc_info, AIS_0102)
    assert "exploded" not in exc_info.value.message  # no internals leak


def test_memory_error_is_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(Image.new("RGB", (20, 20)), "PNG")

    def oom(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(imageio, "_pixels_8bit", oom)
    with pytest.raises(ServiceError) as exc_info:
        load_image(data)
    _assert_code(exc_info, AIS_0103)


# ----------------------------------------------------------------------------- colour modes


def test_rgba_composited_on_white() -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[:, 10:20] = (0, 0, 0, 255)  # opaque black -> black
    rgba[:, 20:] = (0, 0, 255, 128)  # half-transparent blue -> light blue
    result = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert result.bgr[5, 5].tolist() == [255, 255, 255]
    assert result.bgr[5, 15].tolist() == [0, 0, 0]
    b, g, r = result.bgr[5, 25].tolist()
    assert b == 255 and abs(g - 127) <= 1 and abs(r - 127) <= 1


def test_la_composited_on_white() -> None:
    la = Image.new("LA", (20, 20), (0, 0))
    result = load_image(_save(la, "PNG"))
    assert result.bgr[0, 0].tolist() == [255, 255, 255]


def test_palette_image() -> None:
    im = Image.new("P", (20, 20))
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    im.paste(1, (0, 0, 10, 20))
    result = load_image(_save(im, "PNG"))
    assert result.bgr[5, 5].tolist() == [50, 100, 200]
    assert result.bgr[5, 15].tolist() == [0, 0, 0]


def test_palette_with_transparency_composited_on_white() -> None:
    im = Image.new("P", (20, 20))
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * (256 * 3 - 6))
    im.paste(1, (0, 0, 10, 20))
    result = load_image(_save(im, "PNG", transparency=0))
    assert result.bgr[5, 15].tolist() == [255, 255, 255]
    assert result.bgr[5, 5].tolist() == [50, 100, 200]


def test_sixteen_bit_grey_png_scaled_not_clipped() -> None:
    gray16 = np.zeros((20, 30), np.uint16)
    gray16[:, :10] = 65535
    gray16[:, 10:20] = 40000
    result = load_image(_save(Image.fromarray(gray16), "PNG"))
    assert result.bgr[0, 0].tolist() == [255, 255, 255]
    assert result.bgr[0, 15].tolist() == [40000 >> 8] * 3
    assert result.bgr[0, 25].tolist() == [0, 0, 0]


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_sixteen_bit_colour(ext: str) -> None:
    bgr16 = np.zeros((20, 30, 3), np.uint16)
    bgr16[:] = (1000, 30000, 65535)
    ok, buf = cv2.imencode(ext, bgr16)
    assert ok
    result = load_image(buf.tobytes())
    assert result.bgr[0, 0].tolist() == [1000 >> 8, 30000 >> 8, 255]


def test_sixteen_bit_grey_tiff() -> None:
    ok, buf = cv2.imencode(".tiff", np.full((20, 30), 40000, np.uint16))
    assert ok
    assert load_image(buf.tobytes()).bgr[0, 0].tolist() == [40000 >> 8] * 3


def test_cmyk_jpeg() -> None:
    # Pure cyan in CMYK is (0, 255, 255) in RGB, i.e. (255, 255, 0) in BGR.
    result = load_image(_save(Image.new("CMYK", (30, 30), (255, 0, 0, 0)), "JPEG", quality=95))
    b, g, r = result.bgr[15, 15].astype(int).tolist()
    assert b > 240 and g > 240 and r < 15


def test_cmyk_tiff() -> None:
    result = load_image(_save(Image.new("CMYK", (30, 30), (0, 0, 0, 255)), "TIFF"))
    assert result.bgr[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_grayscale(fmt: str) -> None:
    result = load_image(_save(Image.new("L", (20, 20), 77), fmt))
    assert result.bgr.shape == (20, 20, 3)
    assert np.abs(result.bgr.astype(int) - 77).max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit(fmt: str) -> None:
    im = Image.new("1", (20, 20), 0)
    im.paste(1, (0, 0, 10, 20))
    result = load_image(_save(im, fmt))
    assert result.bgr[5, 5].tolist() == [255, 255, 255]
    assert result.bgr[5, 15].tolist() == [0, 0, 0]


# ----------------------------------------------------------------------------- encoding


def test_encode_jpeg_base64_round_trip() -> None:
    bgr = _noisy_photo(80, 60)
    text = encode_jpeg_base64(bgr)
    assert not text.startswith("data:")
    raw = base64.b64decode(text, validate=True)
    assert raw[:3] == b"\xff\xd8\xff"
    decoded = load_image(raw)
    assert decoded.bgr.shape == bgr.shape
    assert np.abs(decoded.bgr.astype(int) - bgr.astype(int)).mean() < 4


def test_encode_jpeg_base64_quality_and_grey() -> None:
    bgr = _noisy_photo(120, 90)
    assert len(encode_jpeg_base64(bgr, quality=30)) < len(encode_jpeg_base64(bgr, quality=95))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert load_image(base64.b64decode(encode_jpeg_base64(grey))).bgr.shape == (90, 120, 3)


@pytest.mark.parametrize(
    ("array", "quality"),
    [
        (np.zeros((10, 10, 3), np.float32), 90),
        (np.zeros((10, 10, 4), np.uint8), 90),
        (np.zeros((0, 10, 3), np.uint8), 90),
        (np.zeros((10, 10, 3), np.uint8), 0),
        (np.zeros((10, 10, 3), np.uint8), 101),
    ],
)
def test_encode_jpeg_base64_rejects_bad_input(array: np.ndarray, quality: int) -> None:
    with pytest.raises(ValueError):
        encode_jpeg_base64(array, quality=quality)


# ----------------------------------------------------------------------------- fuzzing


def _seed_images() -> list[bytes]:
    rgb = _noisy_photo(40, 30)
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        _save(im, "PNG"),
        _save(im.convert("RGBA"), "PNG"),
        _save(im.convert("P"), "PNG"),
        _save(im, "JPEG", quality=80, exif=exif.tobytes()),
        _save(im, "JPEG", quality=80, progressive=True),
        _save(im, "BMP"),
        _save(im.convert("P"), "BMP"),
        _save(im, "TIFF"),
        _save(im, "TIFF", compression="tiff_deflate"),
        _save(im, "TIFF", compression="packbits"),
    ]


_SEEDS = _seed_images()


@st.composite
def _mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        # Mutations concentrate on the first bytes, where the headers live.
        limit = max(1, min(len(data), draw(st.sampled_from([64, 256, len(data)]))))
        pos = draw(st.integers(0, limit - 1))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        if not data:
            break
    return bytes(data)


_MAGIC = st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00"]
)


def _check_only_service_errors(data: bytes) -> None:
    try:
        result = load_image(data)
    except ServiceError as exc:
        assert exc.code in (AIS_0102, AIS_0103), exc
        assert exc.message
    else:
        _assert_valid(result)


# Pillow warns (UserWarning) about the corrupt EXIF it meets; expected noise here.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(_MAGIC, st.binary(max_size=512)).map(lambda parts: parts[0] + parts[1]),
    )
)
def test_fuzz_arbitrary_bytes_only_raise_service_errors(data: bytes) -> None:
    _check_only_service_errors(data)


# Pillow warns (UserWarning) about the corrupt EXIF it meets; expected noise here.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_image())
def test_fuzz_mutated_images_only_raise_service_errors(data: bytes) -> None:
    _check_only_service_errors(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_base64_only_raises_service_errors(text: str) -> None:
    try:
        decode_base64_image(text)
    except ServiceError as exc:
        assert exc.code in (AIS_0102, AIS_0103)
