"""Every error leaves the API as ``{"error_code", "error_msg"}`` with its HTTP status.

Messages are written for the caller: never a stack trace, an SQL statement, a path or
the caller's own input echoed back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from idcard.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)

# The database is down, restarting, failing over, or every pooled connection is busy: the
# caller should retry later (IDC.0503), whichever route it called. InterfaceError is what
# psycopg2 raises on a connection the server closed under it.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError, InterfaceError, PoolTimeoutError)


def error_response(code: ErrorCode, message: str, headers: dict[str, str] | None = None,
                   ) -> JSONResponse:
    return JSONResponse({"error_code": code.value, "error_msg": message},
                        status_code=code.http_status, headers=headers)


def _loc(loc: tuple) -> str:
    # ("query", "limit") -> "limit"; the first element only says where it came from.
    parts = [str(p) for p in loc[1:]] or [str(p) for p in loc]
    return ".".join(parts)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    # Some errors carry headers for the caller (Retry-After of a rate limit).
    return error_response(exc.code, exc.message, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # Only the location and pydantic's generic message: the input itself is not echoed.
    detail = "; ".join(f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                       for e in errors[:3]) or "invalid request"
    return error_response(ErrorCode.INVALID_PARAMETER, f"invalid parameter: {detail}")


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        # Like the vendor's API gateway: an API is a method and a path.
        return error_response(ErrorCode.NO_SUCH_API, "no such API: check the method and path")
    if exc.status_code == 401:
        return error_response(ErrorCode.UNAUTHORIZED, "authentication required")
    if 400 <= exc.status_code < 500:
        return error_response(ErrorCode.INVALID_PARAMETER, "invalid request")
    log.error("HTTP %s raised inside the API", exc.status_code)
    return error_response(ErrorCode.RECOGNITION_FAILED, "internal error")


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", type(exc).__name__)
    return error_response(ErrorCode.NOT_READY, "service not ready: database unavailable",
                          headers={"Retry-After": "5"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # The server logs the traceback (Starlette re-raises to it after this answer); the
    # caller gets a code and no internals.
    log.error("unexpected error in the API: %s", type(exc).__name__)
    return error_response(ErrorCode.RECOGNITION_FAILED, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_type, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
