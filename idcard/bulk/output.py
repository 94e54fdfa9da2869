"""The results file of a batch: JSON Lines or CSV, appended as items finish, resumable.

Each item is one line, written, flushed and fsynced on its own, so a crash (even
``kill -9``) loses at most the items still in flight, and at worst leaves a partial last
line. On start the existing file is read back: its items are skipped, a partial (or
unparsable) last line is cut off, and new lines are appended after the good ones.

- ``.jsonl``: ``{"file": KEY, "response": BODY}`` per item, as ``recognize --jsonl``.
- ``.csv``: ``file, status (ok|error), error_code, error_msg``, the nine fields, and
  ``detect_<alert>_result`` (``true``/``false``, empty when not asked) for every alert
  the run asks for. A ``double_side`` answer fills the nine fields from both sides and
  an alert is ``true`` when either side raised it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcard.options import ALERTS

OUTPUT_FORMATS = (".jsonl", ".csv")


class OutputError(Exception):
    """The output file cannot be resumed or written: a usage error, in one line."""


@dataclass(frozen=True)
class Outcome:
    """What the summary counts of one item."""

    ok: bool
    error_code: str | None = None
    alerts: frozenset[str] = frozenset()  # alerts raised (on any side)


def _sides(result: dict[str, Any]) -> list[dict[str, Any]]:
    # double_side answers {"front": {...}, "back": {...}}; one side answers its fields.
    if result and set(result) <= {"front", "back"}:
        return [s for s in (result.get("front"), result.get("back")) if isinstance(s, dict)]
    return [result]


def outcome_of(response: dict[str, Any]) -> Outcome:
    result = response.get("result")
    if not isinstance(result, dict):
        return Outcome(False, str(response.get("error_code") or ""))
    raised = {a for a in ALERTS for side in _sides(result)
              if side.get(f"detect_{a}_result") is True}
    return Outcome(True, alerts=frozenset(raised))


def _fsync_append(f: io.BufferedWriter, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset after the line, line) for each line that ends in a newline."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            yield offset, line


class ResultsFile(ABC):
    """An output file opened for appending, with what it already holds in ``done``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, Outcome] = {}
        good = self._read_existing() if path.exists() else 0
        try:
            self._f = open(path, "ab")  # noqa: SIM115 - closed in close()
            if self._f.tell() > good:  # a partial or unparsable last line
                self._f.truncate(good)
                self._f.seek(good)
            if good == 0:
                header = self._header()
                if header:
                    _fsync_append(self._f, header)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror})") from None

    def _read_existing(self) -> int:
        """Fill ``done`` from the file; the offset after its last good line."""
        good = 0
        bad_line = 0
        try:
            for n, (offset, line) in enumerate(_complete_lines(self.path), 1):
                if bad_line:
                    raise OutputError(
                        f"{self.path}: line {bad_line} is not a result of this command; "
                        "refusing to append (choose another --out)")
                parsed = self._parse(n, line)
                if parsed is None:
                    bad_line = n  # tolerated only as the very last line
                    continue
                if parsed:
                    key, outcome = parsed
                    self.done[key] = outcome
                good = offset
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot read ({exc.strerror})") from None
        return good

    def write(self, key: str, response: dict[str, Any]) -> Outcome:
        outcome = outcome_of(response)
        _fsync_append(self._f, self._line(key, response))
        self.done[key] = outcome
        return outcome

    def close(self) -> None:
        self._f.close()

    def _header(self) -> bytes:
        return b""

    @abstractmethod
    def _parse(self, n: int, line: bytes) -> tuple[str, Outcome] | tuple[()] | None:
        """(key, outcome) of line ``n`` (1-based); () for a line that is not an item (a
        header); None when it cannot be parsed."""

    @abstractmethod
    def _line(self, key: str, response: dict[str, Any]) -> bytes: ...


class JsonlResults(ResultsFile):
    def _parse(self, n: int, line: bytes) -> tuple[str, Outcome] | None:
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not (isinstance(row, dict) and isinstance(row.get("file"), str)
                and isinstance(row.get("response"), dict)):
            return None
        return row["file"], outcome_of(row["response"])

    def _line(self, key: str, response: dict[str, Any]) -> bytes:
        row = {"file": key, "response": response}
        try:
            return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            # A file name that is not UTF-8 (surrogate-escaped by Python): as \u escapes,
            # which read back to the very same key.
            return (json.dumps(row) + "\n").encode("ascii")


def card_fields() -> tuple[str, ...]:
    """The nine fields, front then back, from the engine's own lists."""
    from worker.recognition.fields import BACK_FIELDS, FRONT_FIELDS

    return FRONT_FIELDS + BACK_FIELDS


class CsvResults(ResultsFile):
    def __init__(self, path: Path, alerts: tuple[str, ...]) -> None:
        self.alerts = tuple(a for a in ALERTS if a in alerts)
        self.fields = card_fields()
        self.columns = ("file", "status", "error_code", "error_msg", *self.fields,
                        *(f"detect_{a}_result" for a in self.alerts))
        super().__init__(path)

    def _row(self, cells: list[str]) -> bytes:
        # One physical line per item, whatever the values: resuming cuts by lines.
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [" ".join(c.splitlines()) for c in cells])
        # surrogateescape: a file name that is not UTF-8 is written as its own bytes and
        # read back to the same key.
        return buf.getvalue().encode("utf-8", "surrogateescape")

    def _header(self) -> bytes:
        return self._row(list(self.columns))

    def _parse(self, n: int, line: bytes) -> tuple[str, Outcome] | tuple[()] | None:
        try:
            cells = next(csv.reader([line.decode("utf-8", "surrogateescape").rstrip("\n")]),
                         [])
        except csv.Error:
            return None
        if n == 1:
            if tuple(cells) != self.columns:
                raise OutputError(
                    f"{self.path}: its columns are not those this run writes (another "
                    "--detect?); choose another --out or run with the same options")
            return ()
        if len(cells) != len(self.columns):
            return None
        row = dict(zip(self.columns, cells, strict=True))
        if row["status"] not in ("ok", "error"):
            return None
        alerts = frozenset(a for a in self.alerts if row[f"detect_{a}_result"] == "true")
        return row["file"], Outcome(row["status"] == "ok", row["error_code"] or None, alerts)

    def _line(self, key: str, response: dict[str, Any]) -> bytes:
        result = response.get("result")
        if not isinstance(result, dict):
            cells = [key, "error", str(response.get("error_code") or ""),
                     str(response.get("error_msg") or "")]
            return self._row(cells + [""] * (len(self.columns) - len(cells)))
        sides = _sides(result)
        values = {k: v for side in sides for k, v in side.items()}
        cells = [key, "ok", "", ""] + [str(values.get(f, "")) for f in self.fields]
        for a in self.alerts:
            verdicts = [s[f"detect_{a}_result"] for s in sides if f"detect_{a}_result" in s]
            cells.append("" if not verdicts else "true" if any(verdicts) else "false")
        return self._row(cells)


def open_results(path: Path, alerts: tuple[str, ...]) -> ResultsFile:
    """The results file for ``path``, by its extension (``OutputError`` otherwise)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return JsonlResults(path)
    if suffix == ".csv":
        return CsvResults(path, alerts)
    raise OutputError(f"{path}: --out must end in {' or '.join(OUTPUT_FORMATS)}")
