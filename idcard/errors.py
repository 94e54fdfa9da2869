"""Every error code the service answers, in one place.

The ``AIS.*`` and ``APIGW.*`` codes are the vendor's (see the contract, section 2); the
``IDC.*`` codes are ours. Each member carries its HTTP status and a one-line description
(its ``__doc__``), so the README table can be generated from here: ``python -m
idcard.errors`` prints it.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """An error code with its HTTP status; ``ErrorCode("AIS.0101")`` looks one up."""

    http_status: int

    def __new__(cls, code: str, http_status: int, doc: str) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.http_status = http_status
        member.__doc__ = doc
        return member

    INVALID_PARAMETER = (
        "AIS.0101", 400,
        "Invalid parameter: image and url both or neither, a non-boolean flag, a bad side, "
        "malformed JSON.",
    )
    UNSUPPORTED_IMAGE = (
        "AIS.0102", 400, "Not base64, a data: prefix, or not a supported image format.",
    )
    IMAGE_SIZE = (
        "AIS.0103", 400,
        "Base64 over 10 MB, a side under 15 px or over 8192 px, or a decompression bomb.",
    )
    NO_CARD = ("AIS.0104", 400, "No ID card found in the image, or too poor to read.")
    RECOGNITION_FAILED = ("AIS.0105", 500, "Recognition failed inside the service.")
    UNAUTHORIZED = ("APIGW.0301", 401, "Missing or wrong X-Auth-Token or AK/SK signature.")
    RATE_LIMITED = ("APIGW.0308", 429, "Rate limit of the project exceeded.")
    # The vendor's API gateway answers an unknown path or method with this code.
    NO_SUCH_API = ("APIGW.0101", 404, "No such API: unknown path or method.")

    FILE_UNREADABLE = ("IDC.0001", 400, "CLI only: an input file cannot be read.")
    URL_DOWNLOAD_FAILED = (
        "IDC.0201", 400,
        "The image URL could not be downloaded (timeout, HTTP error, too large).",
    )
    URL_REFUSED = (
        "IDC.0202", 400,
        "The image URL is refused: not http(s), or it resolves to a loopback, private, "
        "link-local, multicast or reserved address (hosts in IDCARD_URL_ALLOW_HOSTS are "
        "exempt).",
    )
    JOB_NOT_FOUND = (
        "IDC.0404", 404,
        "No such job or batch in this project (another project's job is also not found).",
    )
    SYNC_TIMEOUT = (
        "IDC.0408", 504,
        "The synchronous route gave up waiting after IDCARD_SYNC_TIMEOUT_SECONDS.",
    )
    IDEMPOTENCY_CONFLICT = (
        "IDC.0409", 409, "Idempotency-Key reused with a different request.",
    )
    JOB_NOT_CANCELLABLE = (
        "IDC.0410", 409, "The job cannot be cancelled in its state (it has already started).",
    )
    JOB_CANCELLED = (
        "IDC.0411", 409, "CLI batch only: the item's job was cancelled on the server.",
    )
    NOT_READY = (
        "IDC.0503", 503, "Service not ready: the database or the broker is unavailable.",
    )


class ServiceError(Exception):
    """An error with a code and a message that is safe to show to the caller.

    The message never contains personal data or internals (paths, stack traces).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def to_body(self) -> dict[str, str]:
        return {"error_code": self.code.value, "error_msg": self.message}


def markdown_table() -> str:
    """The error table for the README, derived from the enum."""
    lines = ["| code | when | HTTP |", "| --- | --- | --- |"]
    lines += [f"| {c.value} | {c.__doc__} | {c.http_status} |" for c in ErrorCode]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
