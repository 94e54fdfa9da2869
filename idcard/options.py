"""The request options of the recognition API: the one list of flags and sides.

The HTTP API, the CLI and the engine all derive from these tuples, so a new flag is
added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from idcard.errors import ErrorCode, ServiceError

SIDES = ("front", "back", "double_side")

# Flags that ask for extra output (document table 3), in the document's order.
RETURN_FLAGS = (
    "return_verification",
    "return_text_location",
    "return_portrait_image",
    "return_portrait_location",
    "return_adjusted_image",
)

# The eight alerts. The name after ``detect_`` is the alert's short name; its score in
# ``score_info`` is ``<short>_score`` and its verdict ``detect_<short>_result``.
ALERTS = (
    "reproduce",
    "copy",
    "tampering",
    "border_integrity",
    "blocking_within_border",
    "blur",
    "interim",
    "glare",
)
DETECT_FLAGS = tuple(f"detect_{a}" for a in ALERTS)
FLAGS = RETURN_FLAGS + DETECT_FLAGS


@dataclass(frozen=True)
class RecognitionOptions:
    """What the caller asked for. ``side`` is ``None`` for automatic detection."""

    side: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)

    def wants(self, flag: str) -> bool:
        if flag not in FLAGS:
            raise KeyError(flag)
        return flag in self.flags

    @property
    def alerts(self) -> tuple[str, ...]:
        return tuple(a for a in ALERTS if f"detect_{a}" in self.flags)

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored with a job: side and the flags that are on, in FLAGS order."""
        return {"side": self.side, "flags": [f for f in FLAGS if f in self.flags]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecognitionOptions:
        """The inverse of ``to_dict``; unknown flags or sides are a ``ValueError``."""
        side = data.get("side")
        flags = frozenset(data.get("flags") or ())
        if side is not None and side not in SIDES:
            raise ValueError(f"unknown side {side!r}")
        if not flags <= set(FLAGS):
            raise ValueError(f"unknown flags {sorted(flags - set(FLAGS))}")
        return cls(side=side, flags=flags)

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> RecognitionOptions:
        """Validate the option fields of a request body (``image``/``url`` are not read).

        Raises ``ServiceError(AIS.0101)`` for a non-boolean flag or a bad side.
        """
        side = body.get("side")
        if side is not None and not isinstance(side, str):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "side must be a string")
        if side == "":
            side = None
        if side is not None and side not in SIDES:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"side must be one of {', '.join(SIDES)} or empty",
            )
        flags = set()
        for name in FLAGS:
            value = body.get(name)
            if value is None:
                continue
            # bool is a subclass of int in Python: 1 and 0 are not booleans in JSON.
            if type(value) is not bool:
                raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name} must be a boolean")
            if value:
                flags.add(name)
        return cls(side=side, flags=frozenset(flags))
