"""manifest.csv: the one schema for "which image shows which individual".

This module owns the column names (docs/formats.md documents them). A manifest written by
petkit starts with a ``# petkit-manifest v1`` comment line; hand-written manifests without it
are read as version 1.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from petkit.errors import PetkitError
from petkit.io import write_text

VERSION = 1
HEADER_PREFIX = "# petkit-manifest v"

PATH = "path"  # relative to the manifest's folder (absolute paths are accepted on read)
IDENTITY = "identity"  # the individual shown; empty only for an unlabelled query (role=query)
SPLIT = "split"  # train | val | test
ROLE = "role"  # query | gallery (evaluation); empty: leave-one-out
IS_FAKE = "is_fake"  # 1 for a synthetic/forged image of the identity, else 0
CATEGORY = "category"  # breed, species: for per-category breakdowns
SEQUENCE = "sequence"  # burst/video id: a query is never matched within its own sequence
SOURCE = "source"  # where the image came from (original relative path, dataset name)
SHA1 = "sha1"  # of the file bytes
WIDTH = "width"
HEIGHT = "height"

UNKNOWN_IDENTITY = "n000000"  # "nobody enrolled": the answer for a probe that matches no known individual

REQUIRED = (PATH, IDENTITY)
BBOX = "bbox"  # x,y,w,h in pixels of the photo as displayed (EXIF-rotated): cropped before resizing
OPTIONAL = (SPLIT, ROLE, IS_FAKE, CATEGORY, SEQUENCE, SOURCE, SHA1, WIDTH, HEIGHT, BBOX)
COLUMNS = REQUIRED + OPTIONAL
ALLOWED_VALUES = {
    SPLIT: ("train", "val", "test"),
    ROLE: ("query", "gallery"),
    IS_FAKE: ("0", "1"),
}


@dataclass
class Manifest:
    root: Path  # folder that relative paths start from
    rows: list[dict[str, str]]
    columns: list[str] = field(default_factory=lambda: list(REQUIRED))

    def __len__(self) -> int:
        return len(self.rows)

    def abspath(self, row: dict[str, str]) -> Path:
        path = Path(row[PATH])
        return path if path.is_absolute() else self.root / path

    def has(self, column: str) -> bool:
        return column in self.columns and any(row.get(column) for row in self.rows)

    def values(self, column: str) -> list[str]:
        return [row.get(column, "") for row in self.rows]

    def bboxes(self) -> list[tuple[float, float, float, float] | None]:
        """Each row's crop box (see :func:`parse_bbox`), None where the row has none."""
        return [parse_bbox(row.get(BBOX, "")) for row in self.rows]

    def identities(self) -> list[str]:
        return sorted(set(self.values(IDENTITY)))

    def real(self) -> Manifest:
        """Without the rows marked is_fake = 1 (a fake of X must not count as a match for X)."""
        return Manifest(self.root, [r for r in self.rows if r.get(IS_FAKE) != "1"], self.columns)

    def labelled(self) -> Manifest:
        """Without unlabelled query images (a challenge's test set): they are answered, never learnt."""
        return Manifest(self.root, [r for r in self.rows if r.get(IDENTITY)], self.columns)

    def select(self, split: str | None) -> Manifest:
        if split is None:
            return self
        return Manifest(self.root, [r for r in self.rows if r.get(SPLIT) == split], self.columns)


MAX_IDENTITY_LENGTH = 200


def parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    """``"x,y,w,h"`` (commas or spaces, pixels, w and h > 0) -> a tuple; empty -> None; anything else: ValueError."""
    text = (text or "").strip()
    if not text:
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != 4:
        raise ValueError(f"bbox '{text}' must be 4 numbers x,y,w,h")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"bbox '{text}' must be 4 numbers x,y,w,h") from None
    if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ValueError(f"bbox '{text}' needs x, y >= 0 and a width and height above 0")
    return x, y, w, h


def text_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be a manifest field, or None: the one rule 'prepare' (which leaves such
    files out) and the reader (which refuses them) share. Control characters and line or paragraph
    separators break a CSV record in two for some readers (``str.splitlines`` splits on ``\\x1c``,
    ``\\x85``, ``\\u2028``...) and hide in a terminal; an identity longer than 200 characters is a
    pasted sentence, not a name."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"{what} holds the control character {char!r} at position {position + 1}; rename it"
    if what == "identity" and len(value) > MAX_IDENTITY_LENGTH:
        return f"identity is {len(value)} characters long (at most {MAX_IDENTITY_LENGTH})"
    return None


def _decode(path: Path) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 with a BOM (Excel's 'Unicode text'); anything else is refused."""
    data = path.read_bytes()
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise PetkitError(f"{path} starts as UTF-16 but is not valid UTF-16 ({exc.reason})", "save it as UTF-8 CSV") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PetkitError(f"{path}, line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); petkit reads manifests as UTF-8",
                          "save it as 'CSV UTF-8' (Excel) or convert it: iconv -f latin1 -t utf-8") from exc


def read_manifest(path: str | Path, check_files: bool = True) -> Manifest:
    """Read and check every row: one record per line (a stray quote cannot swallow the rest of the
    file), fields by :func:`text_problem`, allowed values, and (``check_files``) every path an existing file."""
    path = Path(path)
    if not path.is_file():
        raise PetkitError(
            f"manifest not found: {path}", "create one with 'petkit prepare SRC -o OUT'"
        )
    columns, records = csv_records(path)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise PetkitError(
            f"{path} lacks the required column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
            "a manifest needs at least the header 'path,identity'",
        )
    root = path.parent.resolve()
    rows = []
    for line_no, fields in records:
        if len(fields) > len(columns):
            raise PetkitError(f"{path}, line {line_no}: {len(fields)} fields, but the header has {len(columns)} columns",
                              "quote fields that contain commas")
        row = {column: (fields[i].strip() if i < len(fields) else "") for i, column in enumerate(columns)}
        _validate_row(row, path, line_no)
        if check_files:
            file = Path(row[PATH]) if Path(row[PATH]).is_absolute() else root / row[PATH]
            if not file.is_file():
                raise PetkitError(f"{path}, line {line_no}: {row[PATH]} does not exist (paths are relative to the manifest's folder)",
                                  "fix the path, or re-run 'petkit prepare' to list the files that are there")
        rows.append(row)
    if not rows:
        raise PetkitError(f"{path} lists no images", "check that the manifest has data rows")
    return Manifest(root, rows, list(columns))


def csv_records(path: Path):
    """(header columns, iterator of (line number, fields)): the one CSV reader of manifests and pairs files.

    UTF-8 (or UTF-16 with a BOM), an optional ``# petkit-manifest vN`` first line, one record per line."""
    text = _decode(path)
    first = 1
    if text.startswith(HEADER_PREFIX):
        header, _, text = text.partition("\n")
        version = header[len(HEADER_PREFIX):].strip()
        if version != str(VERSION):
            raise PetkitError(
                f"{path} is manifest version {version}; this petkit reads version {VERSION}",
                "upgrade petkit or re-run 'petkit prepare'",
            )
        first = 2
    reader = csv.reader(io.StringIO(text, newline=""))
    records = _records(reader, path, first)
    columns = [c.strip() for c in next(records, (first, []))[1]]
    return columns, records


def _records(reader, path: Path, first: int):
    """(line number, fields) per non-blank record; a record must sit on one line."""
    previous = 0
    try:
        for fields in reader:
            line_no, spanned = first + previous, reader.line_num - previous
            previous = reader.line_num
            if spanned > 1:
                raise PetkitError(f"{path}, line {line_no}: a quoted field runs on over {spanned} lines (an unbalanced quote \")?",
                                  "every record of a manifest sits on one line; close the quote or remove it")
            if fields and any(f.strip() for f in fields):
                yield line_no, fields
    except csv.Error as exc:
        raise PetkitError(f"{path}, line {first + reader.line_num - 1}: {exc}", "check the quoting on that line") from exc


def _validate_row(row: dict[str, str], path: Path, line_no: int) -> None:
    if not row.get(PATH):
        raise PetkitError(f"{path}, line {line_no}: empty '{PATH}'")
    for column, what in ((PATH, "file name"), (IDENTITY, "identity")):
        problem = text_problem(row.get(column, ""), what)
        if problem:
            raise PetkitError(f"{path}, line {line_no}: {problem}")
    if not row.get(IDENTITY) and row.get(ROLE) != "query":
        raise PetkitError(f"{path}, line {line_no}: empty '{IDENTITY}'",
                          "only unlabelled query images (role=query, e.g. a challenge's test images) may leave it empty")
    try:
        parse_bbox(row.get(BBOX, ""))
    except ValueError as exc:
        raise PetkitError(f"{path}, line {line_no}: {exc}", "write the box as x,y,w,h in pixels, e.g. \"12,30,200,180\" (quoted), or leave it empty") from None
    for column, allowed in ALLOWED_VALUES.items():
        value = row.get(column, "")
        if column == IS_FAKE and value.lower() in ("true", "false"):
            row[column] = value = "1" if value.lower() == "true" else "0"
        if value and value not in allowed:
            raise PetkitError(
                f"{path}, line {line_no}: {column} is '{value}'; allowed: {', '.join(allowed)} or empty"
            )


def manifest_text(rows: Iterable[dict[str, object]], columns: list[str]) -> str:
    buffer = io.StringIO()
    buffer.write(f"{HEADER_PREFIX}{VERSION}\n")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def write_manifest(path: str | Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    write_text(path, manifest_text(rows, columns))
