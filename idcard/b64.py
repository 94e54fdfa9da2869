"""The request's ``image`` field: base64 text to image bytes, with the contract's limits.

Shared by the API (which answers a bad ``image`` at once, before creating a job) and
the engine, so that both apply exactly the same rules:

- ``AIS.0101``: ``image`` is not a string (a number, an object, ...).
- ``AIS.0102``: not base64, a ``data:`` prefix, or nothing at all.
- ``AIS.0103``: more than 10 MB of base64.

Only the base64 layer is checked here; whether the bytes are a supported image is the
engine's business (``worker.recognition.imageio``).
"""

from __future__ import annotations

import binascii

from idcard.errors import ErrorCode, ServiceError

try:
    # SIMD base64 (same rules with validate=True): 0.03 ms instead of 1.5 ms for the
    # 270 KB of a 200 KB photo, on the synchronous route's path.
    from pybase64 import b64decode as _b64decode
except ImportError:  # pragma: no cover - a declared dependency; the standard one works
    from base64 import b64decode as _b64decode

#: Contract section 1: "base64 at most 10 MB", counted in base64 characters.
MAX_BASE64_CHARS = 10 * 1024 * 1024
# Anything longer than this is refused without even stripping whitespace, so a huge
# value costs no work; 2x leaves room for any line wrapping a client may add.
_MAX_RAW_BASE64_CHARS = 2 * MAX_BASE64_CHARS


def _too_large(length: int) -> ServiceError:
    return ServiceError(
        ErrorCode.IMAGE_SIZE,
        f"base64 image is {length} characters, over the limit of {MAX_BASE64_CHARS} (10 MB)",
    )


def decode_image_b64(b64: object) -> bytes:
    """Decode the request's ``image`` field into raw image bytes.

    Whitespace (spaces, CR/LF: some clients wrap base64 at 76 columns) is ignored and
    missing ``=`` padding is tolerated; anything else that is not standard base64 is
    ``AIS.0102``. Raises only :class:`ServiceError`.
    """
    if not isinstance(b64, str):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "image must be a base64 string")
    if b64 and len(b64) % 4 == 0 and len(b64) <= MAX_BASE64_CHARS:
        # The usual value, compact and padded: checked and decoded in one pass. Anything
        # else (whitespace, no padding, a bad character) takes the careful path below,
        # which says what is wrong.
        try:
            data = _b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if data:
                return data
    if len(b64) > _MAX_RAW_BASE64_CHARS:
        raise _too_large(len(b64))
    if b64[:64].lstrip()[:5].lower() == "data:":
        raise ServiceError(
            ErrorCode.UNSUPPORTED_IMAGE,
            "image must be plain base64: remove the 'data:<type>;base64,' prefix",
        )
    compact = "".join(b64.split())
    if len(compact) > MAX_BASE64_CHARS:
        raise _too_large(len(compact))
    if not compact:
        raise ServiceError(ErrorCode.UNSUPPORTED_IMAGE, "image is empty")
    if len(compact) % 4:
        # Some encoders drop the '=' padding; a remainder of 1 can never be valid and
        # b64decode rejects it below.
        compact += "=" * (-len(compact) % 4)
    try:
        data = _b64decode(compact, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise ServiceError(ErrorCode.UNSUPPORTED_IMAGE, "image is not valid base64") from None
    if not data:
        raise ServiceError(ErrorCode.UNSUPPORTED_IMAGE, "image is empty")
    return data
