"""Reading a request body: JSON only, size-limited before parsing, always an object.

Everything here answers ``AIS.0101`` (the vendor's "invalid parameter"), except a body
over the size limit, which is ``AIS.0103`` (in practice an image over 10 MB).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from idcard.errors import ErrorCode, ServiceError


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message)


def _too_large(limit: int) -> ServiceError:
    return ServiceError(ErrorCode.IMAGE_SIZE,
                        f"request body is larger than the limit of {limit} bytes")


def require_json_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _invalid("Content-Type must be application/json")


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed ``limit`` bytes.

    Cached on the request, so that a later reader (a request-signature check) gets the
    same bytes.
    """
    cached = getattr(request.state, "raw_body", None)
    if cached is not None:
        if len(cached) > limit:  # read earlier under a larger limit
            raise _too_large(limit)
        return cached
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise _invalid("invalid Content-Length")
        if int(declared) > limit:
            raise _too_large(limit)  # before reading a single byte of it
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request.state.raw_body = body
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a dict; malformed JSON, NaN/Infinity, nesting too deep for the
    parser, or anything but an object is ``AIS.0101``."""
    if not raw.strip():
        raise _invalid("the request body is empty: send a JSON object")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise _invalid("the request body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, bad UTF-8, an integer with too many digits
        raise _invalid("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _invalid("the request body must be a JSON object")
    return value


async def json_object_body(request: Request, limit: int) -> dict[str, Any]:
    require_json_content_type(request)
    raw = await read_limited_body(request, limit)
    # Off the event loop: parsing 14 MB of JSON takes tens of milliseconds.
    return await run_in_threadpool(parse_json_object, raw)
