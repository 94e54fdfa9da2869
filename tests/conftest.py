"""Shared fixtures: generated photos and engine results, cached for the whole session.

Generating a photo costs ~0.15 s and recognising one ~0.5-1 s, so every test asks for
photos and results through these caches: the same (photo, options, today) is recognised
once per session however many tests look at it. The number of real engine calls is
printed at the end of the run; keep it around 100 so the suite stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

# synthcard's DEFAULT_TODAY: generated identities and validity periods are consistent
# with this date, so verification results do not depend on the real calendar.
TODAY = date(2026, 11, 30)

_ENGINE_CALLS = {"count": 0}


@functools.cache
def _case(seed: int, preset: str, side: str):
    from synthcard import make_photo

    return make_photo(seed, preset, side)


@functools.cache
def _recognize(data: bytes, side: str | None, flags: frozenset[str], today: date) -> Any:
    from idcard.errors import ServiceError
    from idcard.options import RecognitionOptions
    from worker.recognition.engine import recognize

    _ENGINE_CALLS["count"] += 1
    try:
        return recognize(data, RecognitionOptions(side=side, flags=flags), today=today)
    except ServiceError as exc:  # cached too, re-raised by the caller
        return exc


@pytest.fixture(scope="session")
def today() -> date:
    return TODAY


@pytest.fixture(scope="session")
def make_case() -> Callable[..., Any]:
    """``make_case(seed, preset, side="front")`` -> ``synthcard.Case`` (cached)."""

    def make(seed: int, preset: str, side: str = "front"):
        return _case(seed, preset, side)

    return make


@pytest.fixture(scope="session")
def photo_folder(make_case) -> Callable[..., dict[str, Any]]:
    """``photo_folder(root, cards, broken)``: writes clean card photos under ``root``
    (``cards``: relative path -> (seed, side); sub-folders made as needed) and the bytes
    ``broken[1]`` as the file ``broken[0]``; returns the expected fields by absolute
    path (the folders that ``idcard-ocr batch`` reads in its tests)."""

    def write(root: Path, cards: dict[str, tuple[int, str]],
              broken: tuple[str, bytes]) -> dict[str, Any]:
        expected = {}
        for name, (seed, side) in cards.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            case = make_case(seed, "clean", side)
            path.write_bytes(case.image_bytes)
            expected[str(path)] = case.expected
        (root / broken[0]).write_bytes(broken[1])
        return expected

    return write


@pytest.fixture(scope="session")
def run_engine() -> Callable[..., dict]:
    """``run_engine(image_bytes, side=None, flags=(), today=TODAY)`` -> response body.

    Cached on all arguments; a ``ServiceError`` is re-raised on every call.
    """

    def run(
        data: bytes,
        side: str | None = None,
        flags: Iterable[str] = (),
        today: date = TODAY,
    ) -> dict:
        out = _recognize(bytes(data), side, frozenset(flags), today)
        if isinstance(out, Exception):
            raise out
        return out

    return run


@pytest.fixture(scope="session")
def recognized(make_case, run_engine) -> Callable[..., tuple[Any, dict]]:
    """``recognized(seed, preset, photo_side="front", side=None, flags=())`` ->
    ``(case, result)`` where ``result`` is the body's ``result`` dict."""

    def get(
        seed: int,
        preset: str,
        photo_side: str = "front",
        side: str | None = None,
        flags: Iterable[str] = (),
    ) -> tuple[Any, dict]:
        case = make_case(seed, preset, photo_side)
        body = run_engine(case.image_bytes, side=side, flags=flags)
        assert set(body) == {"result"}, body
        return case, body["result"]

    return get


def pytest_terminal_summary(terminalreporter) -> None:
    if _ENGINE_CALLS["count"]:
        terminalreporter.write_line(
            f"recognition engine calls in this process: {_ENGINE_CALLS['count']}"
        )
