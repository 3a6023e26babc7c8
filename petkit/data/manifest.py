"""manifest.csv: the one schema for "which image shows which individual".

This module owns the column names (docs/formats.md documents them). A manifest written by
petkit starts with a ``# petkit-manifest v1`` comment line; hand-written manifests without it
are read as version 1.
"""

from __future__ import annotations

import csv
import io
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
OPTIONAL = (SPLIT, ROLE, IS_FAKE, CATEGORY, SEQUENCE, SOURCE, SHA1, WIDTH, HEIGHT)
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


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise PetkitError(
            f"manifest not found: {path}", "create one with 'petkit prepare SRC -o OUT'"
        )
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    if lines and lines[0].startswith(HEADER_PREFIX):
        version = lines[0][len(HEADER_PREFIX):].strip()
        if version != str(VERSION):
            raise PetkitError(
                f"{path} is manifest version {version}; this petkit reads version {VERSION}",
                "upgrade petkit or re-run 'petkit prepare'",
            )
        lines = lines[1:]
    reader = csv.DictReader(lines)
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise PetkitError(
            f"{path} lacks the required column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
            "a manifest needs at least the header 'path,identity'",
        )
    rows = []
    for line_no, row in enumerate(reader, start=2 + (text.startswith(HEADER_PREFIX))):
        if None in row:
            raise PetkitError(f"{path}, line {line_no}: more fields than the header has columns")
        row = {k: (v or "").strip() for k, v in row.items()}
        _validate_row(row, path, line_no)
        rows.append(row)
    if not rows:
        raise PetkitError(f"{path} lists no images", "check that the manifest has data rows")
    return Manifest(path.parent.resolve(), rows, list(columns))


def _validate_row(row: dict[str, str], path: Path, line_no: int) -> None:
    if not row.get(PATH):
        raise PetkitError(f"{path}, line {line_no}: empty '{PATH}'")
    if not row.get(IDENTITY) and row.get(ROLE) != "query":
        raise PetkitError(f"{path}, line {line_no}: empty '{IDENTITY}'",
                          "only unlabelled query images (role=query, e.g. a challenge's test images) may leave it empty")
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
