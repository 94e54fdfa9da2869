"""What a batch reads: a folder of images, or a CSV or JSON Lines manifest.

A manifest row names its image in a ``file``, ``path`` or ``url`` column (the first that
is not empty); ``file`` and ``path`` may hold an http(s) URL too. Relative paths are
resolved against the manifest's folder. Any request option (``side`` and the flags of
``idcard.options.FLAGS``) may be given per row and overrides the command line; in a CSV
an empty cell means "as on the command line".

Every item is identified by its ``file``: the path or URL exactly as the folder walk or
the manifest gives it. That is what the output records, and what a resumed run skips.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcard.errors import ErrorCode, ServiceError
from idcard.options import FLAGS, RecognitionOptions

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
MANIFEST_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SOURCE_KEYS = ("file", "path", "url")
_SOURCE_NAMES = "file, path or url"
OPTION_KEYS = ("side", *FLAGS)
_URL_SCHEMES = ("http://", "https://")
# CSV cells are text; these are the spellings of a boolean we accept (any case).
_CSV_TRUE = frozenset({"true", "1", "yes", "y"})
_CSV_FALSE = frozenset({"false", "0", "no", "n"})


class InputError(Exception):
    """INPUT cannot be used at all (missing, unreadable, no usable columns): a usage
    error, reported in one line."""


@dataclass(frozen=True)
class Item:
    """One image to read: a local ``path`` xor a ``url``, or an ``error`` decided
    before any work (a manifest row that names no image, or is not an object)."""

    key: str
    path: Path | None = None
    url: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # this item's own options
    error: dict[str, str] | None = None


@dataclass
class Input:
    items: list[Item]
    duplicates: int = 0  # items whose key came earlier: read once
    unknown_columns: tuple[str, ...] = ()


def option_fields(options: RecognitionOptions) -> dict[str, Any]:
    """The request fields that ``options`` stand for (side only when set)."""
    out: dict[str, Any] = {f: True for f in FLAGS if f in options.flags}
    if options.side:
        out["side"] = options.side
    return out


def item_options(item: Item, base: dict[str, Any]) -> RecognitionOptions:
    """The item's options over the command line's, validated as the API validates a
    request body (``ServiceError`` ``AIS.0101`` for a bad side or a non-boolean flag)."""
    return RecognitionOptions.from_request({**base, **item.fields})


def read_input(source: Path) -> Input:
    """The items of a folder (recursively, by image extension, sorted) or a manifest.
    Raises ``InputError`` when ``source`` cannot be used."""
    if source.is_dir():
        items = [Item(key=str(p), path=p) for p in _images_under(source)]
        return Input(items)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    kind = MANIFEST_FORMATS.get(source.suffix.lower())
    if kind is None:
        raise InputError(f"{source}: INPUT must be a folder of images or a manifest "
                         f"ending in {', '.join(MANIFEST_FORMATS)}")
    try:
        with open(source, encoding="utf-8-sig", newline="") as f:
            rows, unknown = (_csv_rows(f, source) if kind == "csv"
                             else _jsonl_rows(f, source))
            items = [_item(row, where, source) for where, row in rows]
    except UnicodeDecodeError:
        raise InputError(f"{source}: the manifest is not UTF-8 text") from None
    except csv.Error as exc:
        raise InputError(f"{source}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read the manifest ({exc.strerror})") from None
    return _deduplicated(items, tuple(sorted(unknown)))


def _images_under(folder: Path) -> list[Path]:
    try:
        found = [p for p in folder.rglob("*")
                 if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror})") from None
    return sorted(found, key=str)


def _deduplicated(items: list[Item], unknown: tuple[str, ...]) -> Input:
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return Input(unique, duplicates=len(items) - len(unique), unknown_columns=unknown)


# A row is (where, mapping) with where = "manifest.csv:LINE" for the error messages and
# for the key of a row that names no image; a JSONL line that is not an object maps to
# None.
Row = tuple[str, dict[str, Any] | None]


def _csv_rows(f: Any, source: Path) -> tuple[list[Row], set[str]]:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
        raise InputError(f"{source}: the manifest has no header row")
    names = [h.strip().lower() for h in header]
    if not set(names) & set(SOURCE_KEYS):
        raise InputError(f"{source}: the manifest has no {_SOURCE_NAMES} column")
    unknown = {n for n in names if n and n not in SOURCE_KEYS and n not in OPTION_KEYS}
    rows: list[Row] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue  # blank lines, trailing empty rows of a spreadsheet export
        row: dict[str, Any] = {}
        for name, cell in zip(names, cells, strict=False):
            value = cell.strip()
            if name in OPTION_KEYS and name != "side":
                value = _csv_bool(value)
            if value != "":
                row[name] = value
        rows.append((f"{source.name}:{reader.line_num}", row))
    return rows, unknown


def _csv_bool(text: str) -> bool | str:
    low = text.lower()
    if low in _CSV_TRUE:
        return True
    if low in _CSV_FALSE:
        return False
    return text  # left as text: the option check answers AIS.0101 for it


def _jsonl_rows(f: Any, source: Path) -> tuple[list[Row], set[str]]:
    rows: list[Row] = []
    unknown: set[str] = set()
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        where = f"{source.name}:{n}"
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            rows.append((where, None))
            continue
        unknown |= {k for k in row if k not in SOURCE_KEYS and k not in OPTION_KEYS}
        rows.append((where, {k: v for k, v in row.items() if v is not None and v != ""}))
    return rows, unknown


def _item(data: dict[str, Any] | None, where: str, manifest: Path) -> Item:
    if data is None:
        return Item(key=where, error=_invalid("the manifest line is not a JSON object"))
    fields = {k: data[k] for k in OPTION_KEYS if k in data}
    for name in SOURCE_KEYS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return Item(key=where, error=_invalid(f"{name} must be a string"))
        if value.lower().startswith(_URL_SCHEMES):
            return Item(key=value, url=value, fields=fields)
        if name == "url":
            return Item(key=value, fields=fields, error=ServiceError(
                ErrorCode.URL_REFUSED, "url must be an http or https URL").to_body())
        path = Path(value).expanduser()
        return Item(key=value, path=path if path.is_absolute() else manifest.parent / path,
                    fields=fields)
    return Item(key=where, error=_invalid(
        f"the manifest row names no image (no {_SOURCE_NAMES})"))


def _invalid(message: str) -> dict[str, str]:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message).to_body()

