"""pairs.csv: the image pairs a verification challenge asks about.

Columns: ``pair_id`` (optional: the row number otherwise), ``path_a``, ``path_b`` (relative to the
CSV's folder, or absolute) and, for scored development sets, ``same`` (1 same individual, 0 not).
A pairs file is also a dataset source: ``petkit embed MODEL pairs.csv`` embeds each distinct
image once (as unlabelled query rows), and ``petkit submit --format pair_scores --pairs pairs.csv``
or ``petkit evaluate --option verification.pairs=pairs.csv`` look the pairs up by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from petkit.data import manifest as mf
from petkit.errors import PetkitError

PAIR_ID, PATH_A, PATH_B, SAME = "pair_id", "path_a", "path_b", "same"


@dataclass
class Pairs:
    root: Path
    ids: list[str]
    a: list[str]  # absolute, resolved paths
    b: list[str]
    same: list[bool] | None  # None when the file has no 'same' column

    def __len__(self) -> int:
        return len(self.ids)

    def images(self) -> list[str]:
        return sorted(set(self.a) | set(self.b))


def is_pairs_file(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open("rb") as handle:
        header = handle.readline(65536).decode("utf-8", "replace")  # detection only: the reader checks the encoding
    return PATH_A in header and PATH_B in header


def read_pairs(path: str | Path) -> Pairs:
    path = Path(path)
    if not path.is_file():
        raise PetkitError(f"pairs file not found: {path}", f"a CSV with columns {PAIR_ID},{PATH_A},{PATH_B}[,{SAME}]")
    columns, records = mf.csv_records(path)
    missing = [c for c in (PATH_A, PATH_B) if c not in columns]
    if missing:
        raise PetkitError(f"{path} lacks the column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
                          f"a pairs file needs the header {PAIR_ID},{PATH_A},{PATH_B}[,{SAME}]")
    root = path.parent.resolve()
    ids, a, b, same = [], [], [], []
    for line_no, fields in records:
        row = dict(zip(columns, fields))
        if len(fields) > len(columns) or not row.get(PATH_A) or not row.get(PATH_B):
            raise PetkitError(f"{path}, line {line_no}: expected {PAIR_ID},{PATH_A},{PATH_B}[,{SAME}] with both paths set")
        for column in (PATH_A, PATH_B):
            problem = mf.text_problem(row[column], "file name")
            if problem:
                raise PetkitError(f"{path}, line {line_no}: {problem}")
        ids.append((row.get(PAIR_ID) or str(len(ids) + 1)).strip())
        a.append(_absolute(root, row[PATH_A]))
        b.append(_absolute(root, row[PATH_B]))
        if SAME in columns:
            value = (row.get(SAME) or "").strip().lower()
            if value not in ("0", "1", "true", "false"):
                raise PetkitError(f"{path}, line {line_no}: {SAME} is '{row.get(SAME)}'; use 1 (same individual) or 0")
            same.append(value in ("1", "true"))
    if not ids:
        raise PetkitError(f"{path} lists no pairs", "add rows below the header")
    duplicated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if duplicated:
        raise PetkitError(f"{path}: pair_id {duplicated[0]} appears more than once", "every pair needs its own id")
    return Pairs(root, ids, a, b, same if SAME in columns else None)


def _absolute(root: Path, value: str) -> str:
    p = Path(value.strip())
    return str((p if p.is_absolute() else root / p).resolve())


def pairs_manifest(pairs: Pairs) -> mf.Manifest:
    """Every distinct image of the pairs, once, as an unlabelled query row."""
    rows = [{mf.PATH: p, mf.IDENTITY: "", mf.ROLE: "query"} for p in pairs.images()]
    return mf.Manifest(pairs.root, rows, [mf.PATH, mf.IDENTITY, mf.ROLE])
