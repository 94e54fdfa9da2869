"""Every error code the service answers, in one place.

The ``AIS.*`` codes are the vendor's (see the contract, section 2); the ``IDC.*``
codes are ours and are listed in the README.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    INVALID_PARAMETER = "AIS.0101"
    UNSUPPORTED_IMAGE = "AIS.0102"
    IMAGE_SIZE = "AIS.0103"
    NO_CARD = "AIS.0104"
    RECOGNITION_FAILED = "AIS.0105"
    UNAUTHORIZED = "APIGW.0301"
    RATE_LIMITED = "APIGW.0308"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    ErrorCode.INVALID_PARAMETER: 400,
    ErrorCode.UNSUPPORTED_IMAGE: 400,
    ErrorCode.IMAGE_SIZE: 400,
    ErrorCode.NO_CARD: 400,
    ErrorCode.RECOGNITION_FAILED: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.RATE_LIMITED: 429,
}


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
