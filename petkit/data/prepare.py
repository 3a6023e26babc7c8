"""``petkit prepare``: raw photos -> checked, split ``manifest.csv`` + a report.

The source is only ever read. Unusable files are listed with a reason and left out of the
manifest; nothing is moved, renamed or deleted (``--flatten-distortion`` folds the images of
``distortion/`` sub-folders into their identity *in the manifest*, not on disk).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import statistics
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from PIL import Image

from petkit import __version__
from petkit.data import manifest as mf
from petkit.data.images import SUFFIX_FORMATS, is_image_name
from petkit.errors import PetkitError
from petkit.io import refuse_overwrite, write_json

SplitBy = Literal["identity", "image", "none"]
DISTORTION_DIR = "distortion"
FAKE_DIR = "fake"  # <identity>/fake/: forged images of that identity (is_fake = 1)
REPORT_NAME = "prepare_report.json"
# the course challenge's verification layout (docs/tasks/face-course.md)
KNOWN_DIR, DEV_DIR, TEST_DIR, DEV_TRUTH = "known", "unknown_dev", "unknown_test", "verification_dev.csv"
UNKNOWN_LABEL = "n000000"  # "no correspondence": the probe shows nobody in known/
_IGNORED_NAMES = {"Thumbs.db", "desktop.ini"}


@dataclass
class Candidate:
    """One file that might become a manifest row."""

    path: Path
    identity: str
    source: str  # path relative to the source root, as the user knows it
    extra: dict[str, str] = field(default_factory=dict)  # columns from a CSV listing


@dataclass
class Checked:
    candidate: Candidate
    ok: bool
    reason: str = ""
    note: str = ""
    pixel_hash: str = ""
    sha1: str = ""
    width: int = 0
    height: int = 0


@dataclass
class PrepareOptions:
    flatten_distortion: bool = False
    split_by: SplitBy = "identity"
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    gallery_per_identity: int = 0  # >0: role column for val/test (else leave-one-out)
    workers: int = 4
    overwrite: bool = False


@dataclass
class PrepareResult:
    manifest_path: Path
    report_path: Path
    report: dict


# ---------------------------------------------------------------------------------------
# discovery


def discover(src: Path, flatten_distortion: bool) -> tuple[list[Candidate], list[dict]]:
    """Candidates from identity folders or a CSV listing, plus files skipped on sight."""
    if not src.exists():
        raise PetkitError(f"source not found: {src}", "pass a folder of <identity>/<image> folders or a CSV listing")
    if is_course_layout(src):
        return _discover_course(src)
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise PetkitError(f"source {src} is a file but not a .csv listing", "pass a folder or a CSV with path,identity columns")
        return _discover_csv(src), []
    return _discover_folders(src, flatten_distortion)


def _discover_folders(root: Path, flatten: bool) -> tuple[list[Candidate], list[dict]]:
    candidates: list[Candidate] = []
    skipped: list[dict] = []
    for entry in sorted(root.iterdir()):
        if _hidden(entry):
            continue
        if entry.is_file():
            reason = "not inside an identity folder (label unknown)" if is_image_name(entry) else "not an image"
            skipped.append({"path": entry.name, "reason": reason})
            continue
        for path in sorted(entry.rglob("*")):
            if path.is_dir() or _hidden(path):
                continue
            rel = path.relative_to(root).as_posix()
            depth = len(path.relative_to(entry).parts)
            if depth == 2 and path.parent.name == FAKE_DIR:
                candidates.append(Candidate(path, entry.name, rel, {mf.IS_FAKE: "1"}))
            elif depth == 2 and path.parent.name == DISTORTION_DIR and flatten:
                candidates.append(Candidate(path, entry.name, rel))
            elif depth == 1:
                candidates.append(Candidate(path, entry.name, rel))
            elif path.parent.name == DISTORTION_DIR and depth == 2:
                skipped.append({"path": rel, "reason": "in a distortion/ folder; pass --flatten-distortion to include it"})
            else:
                skipped.append({"path": rel, "reason": "nested folder; images must sit directly in <identity>/ (or its distortion/, fake/)"})
    if any(c.extra.get(mf.IS_FAKE) == "1" for c in candidates):
        for c in candidates:
            c.extra.setdefault(mf.IS_FAKE, "0")
    return candidates, skipped


def is_course_layout(root: Path) -> bool:
    return root.is_dir() and (root / KNOWN_DIR).is_dir() and ((root / DEV_DIR).is_dir() or (root / TEST_DIR).is_dir())


def _discover_course(root: Path) -> tuple[list[Candidate], list[dict]]:
    """known/<identity>/ -> train (the gallery); unknown_dev/ -> val queries labelled by
    verification_dev.csv; unknown_test/ -> unlabelled test queries.

    A dev image labelled n000000 gets the identity ``n000000/<file stem>``: an individual of its
    own, absent from known/, so unknown people never count as matching each other.
    """
    candidates, skipped = _discover_folders(root / KNOWN_DIR, flatten=False)
    for c in candidates:
        c.source = f"{KNOWN_DIR}/{c.source}"
        c.extra.update({mf.SPLIT: "train", mf.ROLE: "gallery"})
    truth = _dev_truth(root / DEV_TRUTH) if (root / DEV_DIR).is_dir() else {}
    for path in _flat_images(root / DEV_DIR, skipped):
        label = truth.get(path.name, truth.get(path.stem))
        if label is None:
            skipped.append({"path": f"{DEV_DIR}/{path.name}", "reason": f"not listed in {DEV_TRUTH} (no ground truth)"})
            continue
        identity = f"{UNKNOWN_LABEL}/{path.stem}" if label == UNKNOWN_LABEL else label
        candidates.append(Candidate(path, identity, f"{DEV_DIR}/{path.name}", {mf.SPLIT: "val", mf.ROLE: "query"}))
    for path in _flat_images(root / TEST_DIR, skipped):
        candidates.append(Candidate(path, "", f"{TEST_DIR}/{path.name}", {mf.SPLIT: "test", mf.ROLE: "query"}))
    return candidates, skipped


def _flat_images(folder: Path, skipped: list[dict]) -> list[Path]:
    if not folder.is_dir():
        return []
    paths = []
    for path in sorted(folder.iterdir()):
        if _hidden(path):
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
                          f"add {DEV_TRUTH} (image,label per line; label {UNKNOWN_LABEL} for no correspondence) or remove {DEV_DIR}/")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    has_header = bool(rows and rows[0] and rows[0][0].strip().lower() in _HEADER_WORDS)
    truth = {}
    for line_no, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise PetkitError(f"{path}, line {line_no}: expected 'image,label'", f"label each dev image with its identity or {UNKNOWN_LABEL}")
        truth[row[0].strip()] = row[1].strip()
    return truth


_HEADER_WORDS = {"id", "image", "img", "filename", "file", "name", "path"}


def _discover_csv(listing: Path) -> list[Candidate]:
    manifest = mf.read_manifest(listing)  # same schema and checks as a manifest
    extra_columns = [c for c in manifest.columns if c not in (mf.PATH, mf.IDENTITY, mf.SHA1, mf.WIDTH, mf.HEIGHT)]
    return [
        Candidate(
            manifest.abspath(row), row[mf.IDENTITY], row[mf.PATH],
            {c: row.get(c, "") for c in extra_columns},
        )
        for row in manifest.rows
    ]


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _IGNORED_NAMES or path.name == "__MACOSX"


# ---------------------------------------------------------------------------------------
# checking


def check_file(candidate: Candidate) -> Checked:
    path = candidate.path
    if not path.is_file():
        return Checked(candidate, False, "file not found")
    size = path.stat().st_size
    if size == 0:
        return Checked(candidate, False, "empty file (0 bytes)")
    data = path.read_bytes()
    try:
        with Image.open(path) as image:
            image.load()
            fmt = image.format or "?"
            rgb = image.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken files
        reason = "not an image" if not is_image_name(path) else f"corrupt or truncated image ({exc})"
        return Checked(candidate, False, reason)
    note = ""
    expected = SUFFIX_FORMATS.get(path.suffix.lower())
    if expected is None:
        note = f"{fmt} data in a file named '{path.suffix or '(no suffix)'}'"
    elif fmt not in expected:
        note = f"{fmt} data in a file named '{path.suffix}' (decoded by content; kept)"
    pixel_hash = hashlib.sha1(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
    return Checked(
        candidate, True, note=note, pixel_hash=pixel_hash, sha1=hashlib.sha1(data).hexdigest(),
        width=rgb.width, height=rgb.height,
    )


def check_all(candidates: list[Candidate], workers: int, progress: Callable[[int], None] | None) -> list[Checked]:
    # PIL releases the GIL while decoding, so threads use every core without pickling images
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = []
        for checked in pool.map(check_file, candidates):
            results.append(checked)
            if progress:
                progress(1)
    return results


def resolve_duplicates(checked: list[Checked]) -> None:
    """Same pixels twice: keep the first within an identity; across identities keep none."""
    by_hash: dict[str, list[Checked]] = defaultdict(list)
    for item in checked:
        if item.ok and item.candidate.identity:  # an unlabelled test image is always answered, even twice
            by_hash[item.pixel_hash].append(item)
    for group in by_hash.values():
        if len(group) < 2:
            continue
        identities = {g.candidate.identity for g in group}
        first = group[0].candidate.source
        if len(identities) > 1:
            names = ", ".join(sorted(identities))
            for item in group:
                item.ok = False
                item.reason = f"same pixels labelled as different identities ({names}); label conflict"
        else:
            for item in group[1:]:
                item.ok = False
                item.reason = f"exact duplicate (same pixels) of {first}"


# ---------------------------------------------------------------------------------------
# splitting


def assign_splits(rows: list[dict], options: PrepareOptions) -> None:
    rng = random.Random(options.seed)
    by_identity: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_identity[row[mf.IDENTITY]].append(row)
    if options.split_by == "identity":
        _split_identities(by_identity, options.ratios, rng)
    elif options.split_by == "image":
        _split_images(by_identity, options.ratios, rng)
    if options.gallery_per_identity > 0 and options.split_by != "none":
        _assign_roles(by_identity, options.gallery_per_identity, rng)


def _split_identities(by_identity: dict[str, list[dict]], ratios, rng: random.Random) -> None:
    names = sorted(by_identity)
    rng.shuffle(names)
    counts = _allocate(len(names), ratios)
    start = 0
    for split, count in zip(mf.ALLOWED_VALUES[mf.SPLIT], counts):
        for name in names[start:start + count]:
            for row in by_identity[name]:
                row[mf.SPLIT] = split
        start += count


def _split_images(by_identity: dict[str, list[dict]], ratios, rng: random.Random) -> None:
    for name in sorted(by_identity):
        images = by_identity[name]
        rng.shuffle(images)
        counts = _allocate(len(images), ratios) if len(images) > 1 else (1, 0, 0)
        start = 0
        for split, count in zip(mf.ALLOWED_VALUES[mf.SPLIT], counts):
            for row in images[start:start + count]:
                row[mf.SPLIT] = split
            start += count


def _allocate(n: int, ratios) -> tuple[int, int, int]:
    """Largest-remainder split of n items; train keeps at least one."""
    total = sum(ratios)
    exact = [n * r / total for r in ratios]
    counts = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    if counts[0] == 0 and n > 0:
        donor = 1 if counts[1] >= counts[2] else 2
        counts[donor] -= 1
        counts[0] += 1
    return counts[0], counts[1], counts[2]


def _assign_roles(by_identity: dict[str, list[dict]], per_identity: int, rng: random.Random) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rows in by_identity.values():
        for row in rows:
            if row.get(mf.SPLIT) in ("val", "test"):
                groups[(row[mf.IDENTITY], row[mf.SPLIT])].append(row)
    for key in sorted(groups):
        rows = groups[key]
        rng.shuffle(rows)
        for i, row in enumerate(rows):
            row[mf.ROLE] = "gallery" if i < per_identity or len(rows) == 1 else "query"


# ---------------------------------------------------------------------------------------
# the command


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0 or values[0] <= 0:
        raise PetkitError(
            f"--ratios '{text}' must be three non-negative numbers train,val,test with train > 0",
            "for example --ratios 0.7,0.15,0.15",
        )
    return values[0], values[1], values[2]


def prepare(
    src: str | Path,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> PrepareResult:
    options = options or PrepareOptions()
    src, out_dir = Path(src), Path(out_dir)
    manifest_path, report_path = out_dir / "manifest.csv", out_dir / REPORT_NAME
    refuse_overwrite([manifest_path, report_path], options.overwrite)
    if src.is_dir() and _inside(out_dir, src):
        raise PetkitError(
            f"output folder {out_dir} is inside the source {src}",
            "write the manifest elsewhere so the source folder stays untouched",
        )
    candidates, skipped = discover(src, options.flatten_distortion)
    if on_total:
        on_total(len(candidates))
    checked = check_all(candidates, options.workers, progress)
    resolve_duplicates(checked)
    rows = [_row(item, out_dir) for item in checked if item.ok]
    if not rows:
        raise PetkitError(
            f"no usable images found in {src}",
            "expected <identity>/<image> folders (or a CSV with path,identity); see the report for reasons",
        )
    splits_given = any(row.get(mf.SPLIT) for row in rows)  # a layout's or a listing's own splits are kept
    if not splits_given:
        assign_splits(rows, options)
    columns = _columns(rows)
    report = _report(src, out_dir, options, candidates, checked, skipped, rows)
    if splits_given:
        report["options"]["split_by"] = "given by the source"
    mf.write_manifest(manifest_path, rows, columns)
    write_json(report_path, report)
    return PrepareResult(manifest_path, report_path, report)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _row(item: Checked, out_dir: Path) -> dict:
    c = item.candidate
    rel = os.path.relpath(c.path.resolve(), out_dir.resolve())
    return {
        mf.PATH: Path(rel).as_posix(), mf.IDENTITY: c.identity, mf.SOURCE: c.source,
        mf.SHA1: item.sha1, mf.WIDTH: item.width, mf.HEIGHT: item.height, **c.extra,
    }


def _columns(rows: list[dict]) -> list[str]:
    present = {key for row in rows for key, value in row.items() if value not in ("", None)}
    ordered = [c for c in mf.COLUMNS if c in present or c in mf.REQUIRED]
    return ordered + sorted(present - set(mf.COLUMNS))


def _report(src, out_dir, options, candidates, checked, skipped, rows) -> dict:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row[mf.IDENTITY]:
            counts[row[mf.IDENTITY]] += 1
    per_identity = sorted(counts.values())
    all_identities = {c.identity for c in candidates if c.identity}
    empty = sorted(all_identities - set(counts))
    excluded = [{"path": i.candidate.source, "reason": i.reason} for i in checked if not i.ok]
    splits = {}
    for split in mf.ALLOWED_VALUES[mf.SPLIT]:
        chosen = [r for r in rows if r.get(mf.SPLIT) == split]
        if chosen:
            splits[split] = {"identities": len({r[mf.IDENTITY] for r in chosen if r[mf.IDENTITY]}), "images": len(chosen),
                             "unlabelled": sum(1 for r in chosen if not r[mf.IDENTITY])}
    return {
        "format": "petkit.prepare-report",
        "version": 1,
        "petkit_version": __version__,
        "source": str(src),
        "manifest": str(out_dir / "manifest.csv"),
        "options": {
            "flatten_distortion": options.flatten_distortion, "split_by": options.split_by,
            "ratios": list(options.ratios), "seed": options.seed,
            "gallery_per_identity": options.gallery_per_identity,
        },
        "summary": {
            "identities": len(counts),
            "images": len(rows),
            "images_per_identity": {
                "min": per_identity[0], "median": statistics.median(per_identity), "max": per_identity[-1],
            },
            "excluded": len(excluded),
            "skipped": len(skipped),
            "identities_without_usable_images": empty,
            "splits": splits,
        },
        "excluded": excluded,
        "skipped": skipped,
        "notes": [{"path": i.candidate.source, "note": i.note} for i in checked if i.ok and i.note],
    }
