"""The course challenge's verification layout as a dataset source (docs/tasks/face-course.md).

``known/<identity>/`` -> train (the gallery); ``unknown_dev/`` -> val queries labelled by
``verification_dev.csv``; ``unknown_test/`` -> unlabelled test queries. A dev image labelled
``n000000`` gets the identity ``n000000/<file stem>``: an individual of its own, absent from
known/, so unknown people never count as matching each other.
"""

from __future__ import annotations

import csv
from pathlib import Path

from petkit.data import manifest as mf
from petkit.data.sources import FolderSource, hidden
from petkit.errors import PetkitError
from petkit.interfaces import Candidate, DatasetSource, Listing
from petkit.registry import DATASETS

KNOWN_DIR, DEV_DIR, TEST_DIR, DEV_TRUTH = "known", "unknown_dev", "unknown_test", "verification_dev.csv"
_HEADER_WORDS = {"id", "image", "img", "filename", "file", "name", "path"}


class CourseSource(DatasetSource):
    """known/<identity>/ (train, gallery), unknown_dev/ + verification_dev.csv (val queries), unknown_test/ (test queries)."""

    priority = 20
    empty_hint = "expected images in known/<identity>/, unknown_dev/, unknown_test/"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and (path / KNOWN_DIR).is_dir() and ((path / DEV_DIR).is_dir() or (path / TEST_DIR).is_dir())

    def scan(self, path: Path) -> Listing:
        if not self.detect(path):
            raise PetkitError(f"{path} is not the course layout", "expected known/<identity>/ beside unknown_dev/ and/or unknown_test/")
        known = FolderSource().scan(path / KNOWN_DIR)
        candidates, skipped = known.candidates, [{**s, "path": f"{KNOWN_DIR}/{s['path']}"} for s in known.skipped]
        for c in candidates:
            c.source = f"{KNOWN_DIR}/{c.source}"
            c.extra.update({mf.SPLIT: "train", mf.ROLE: "gallery"})
        truth = _dev_truth(path / DEV_TRUTH) if (path / DEV_DIR).is_dir() else {}
        for file in _flat_images(path / DEV_DIR, skipped):
            label = truth.get(file.name, truth.get(file.stem))
            if label is None:
                skipped.append({"path": f"{DEV_DIR}/{file.name}", "reason": f"not listed in {DEV_TRUTH} (no ground truth)"})
                continue
            identity = f"{mf.UNKNOWN_IDENTITY}/{file.stem}" if label == mf.UNKNOWN_IDENTITY else label
            candidates.append(Candidate(file, identity, f"{DEV_DIR}/{file.name}", {mf.SPLIT: "val", mf.ROLE: "query"}))
        for file in _flat_images(path / TEST_DIR, skipped):
            candidates.append(Candidate(file, "", f"{TEST_DIR}/{file.name}", {mf.SPLIT: "test", mf.ROLE: "query"}))
        return Listing(path, candidates, skipped)


def _flat_images(folder: Path, skipped: list[dict]) -> list[Path]:
    if not folder.is_dir():
        return []
    paths = []
    for path in sorted(folder.iterdir()):
        if hidden(path):
            continue
        if path.is_file():
            paths.append(path)
        else:
            skipped.append({"path": f"{folder.name}/{path.name}", "reason": "a folder inside a flat image folder"})
    return paths


def _dev_truth(path: Path) -> dict[str, str]:
    """image name (or stem) -> label, from the first two columns of verification_dev.csv."""
    if not path.is_file():
        raise PetkitError(f"{path.parent.name}/ has {DEV_DIR}/ but no {DEV_TRUTH}",
                          f"add {DEV_TRUTH} (image,label per line; label {mf.UNKNOWN_IDENTITY} for no correspondence) or remove {DEV_DIR}/")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    has_header = bool(rows and rows[0] and rows[0][0].strip().lower() in _HEADER_WORDS)
    truth = {}
    for line_no, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise PetkitError(f"{path}, line {line_no}: expected 'image,label'", f"label each dev image with its identity or {mf.UNKNOWN_IDENTITY}")
        truth[row[0].strip()] = row[1].strip()
    return truth


@DATASETS.register("course_verification")
def course_source() -> CourseSource:
    """known/<identity>/ (train, gallery), unknown_dev/ + verification_dev.csv (val queries), unknown_test/ (test queries)."""
    return CourseSource()
