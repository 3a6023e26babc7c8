"""``petkit prepare``: raw photos -> checked, split ``manifest.csv`` + a report.

The source is only ever read. Unusable files are listed with a reason and left out of the
manifest; nothing is moved, renamed or deleted (``--flatten-distortion`` folds the images of
``distortion/`` sub-folders into their identity *in the manifest*, not on disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import statistics
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

from petkit import __version__
from petkit.data import manifest as mf
from petkit.data.images import SUFFIX_FORMATS, TooLarge, bbox_problem, displayed_size, is_image_name, opened
from petkit.data.sources import build_source, detect_format
from petkit.errors import PetkitError
from petkit.interfaces import Candidate
from petkit.io import refuse_overwrite, write_json
from petkit.limits import NonNegativeInt, Range, check_args

SplitBy = Literal["identity", "image", "none"]
REPORT_NAME = "prepare_report.json"


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
    seed: NonNegativeInt = 0
    gallery_per_identity: Annotated[int, Range(0, 100_000)] = 0  # >0: role column for val/test (else leave-one-out)
    workers: Annotated[int, Range(1, 256)] = 4
    overwrite: bool = False
    fmt: str | None = None  # a registered labelled dataset source; None: detected


@dataclass
class PrepareResult:
    manifest_path: Path
    report_path: Path
    report: dict


# ---------------------------------------------------------------------------------------
# discovery: a labelled dataset source lists the files (petkit.data.sources, petkit.data.course)


def discover(src: Path, flatten_distortion: bool, fmt: str | None = None) -> tuple[list[Candidate], list[dict]]:
    """Candidates from a labelled dataset source (identity folders, a CSV listing, a challenge layout), plus files skipped on sight."""
    if not src.exists():
        raise PetkitError(f"source not found: {src}", "pass a folder of <identity>/<image> folders or a CSV listing")
    name = fmt or detect_format(src, labelled=True)
    source = build_source(name, flatten_distortion=flatten_distortion)
    if not source.labelled:
        raise PetkitError(f"dataset source '{name}' has no identities to prepare", "prepare identity folders, a CSV listing or a labelled layout")
    if src.is_file() and name == "manifest" and src.suffix.lower() != ".csv":
        raise PetkitError(f"source {src} is a file but not a .csv listing", "pass a folder or a CSV with path,identity columns")
    listing = source.scan(src)
    return listing.candidates, listing.skipped


# ---------------------------------------------------------------------------------------
# checking


def check_file(candidate: Candidate) -> Checked:
    path = candidate.path
    if not path.is_file():
        return Checked(candidate, False, "file not found")
    size = path.stat().st_size
    if size == 0:
        return Checked(candidate, False, "empty file (0 bytes)")
    problem = mf.text_problem(candidate.source, "file name") or (mf.text_problem(candidate.identity, "identity") if candidate.identity else None)
    if problem:  # the manifest's reader refuses it: never write it
        return Checked(candidate, False, problem)
    data = path.read_bytes()
    try:
        with opened(path) as image:
            fmt = image.format or "?"
            rgb = image.convert("RGB")
            shown = displayed_size(image)
    except TooLarge as error:
        return Checked(candidate, False, f"too large ({error.message.split('refused: ', 1)[-1]})")
    except PetkitError as error:
        reason = "not an image" if not is_image_name(path) else f"corrupt or truncated image ({error.__cause__})"
        return Checked(candidate, False, reason)
    except Exception as exc:  # PIL raises many types for broken files
        reason = "not an image" if not is_image_name(path) else f"corrupt or truncated image ({exc})"
        return Checked(candidate, False, reason)
    try:
        box = mf.parse_bbox(candidate.extra.get(mf.BBOX, ""))
    except ValueError as exc:
        return Checked(candidate, False, str(exc))
    if box is not None and bbox_problem(box, shown):
        return Checked(candidate, False, bbox_problem(box, shown))
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
    check_args(PrepareOptions, dataclasses.asdict(options), lambda f: f"--{f.replace('_', '-')}")
    src, out_dir = Path(src), Path(out_dir)
    manifest_path, report_path = out_dir / "manifest.csv", out_dir / REPORT_NAME
    refuse_overwrite([manifest_path, report_path], options.overwrite, inputs=(src,))  # --overwrite never replaces the listing read
    if src.is_dir() and _inside(out_dir, src):
        raise PetkitError(
            f"output folder {out_dir} is inside the source {src}",
            "write the manifest elsewhere so the source folder stays untouched",
        )
    candidates, skipped = discover(src, options.flatten_distortion, options.fmt)
    if on_total:
        on_total(len(candidates))
    checked = check_all(candidates, options.workers, progress)
    resolve_duplicates(checked)
    rows = [_row(item, out_dir) for item in checked if item.ok]
    if not rows:  # the report says why each file was left out: written even now (no manifest is)
        report = _report(src, out_dir, options, candidates, checked, skipped, rows)
        write_json(report_path, report)
        reasons = defaultdict(int)
        for item in [*report["excluded"], *report["skipped"]]:
            reasons[str(item.get("reason", "?")).split(" (")[0]] += 1
        common = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]) or "no files at all"
        raise PetkitError(
            f"no usable images found in {src} ({common})",
            f"expected <identity>/<image> folders, train/ val/ test/ folders of those, or a CSV with path,identity; "
            f"every file's reason is in {report_path}",
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
            } if per_identity else {"min": 0, "median": 0, "max": 0},
            "excluded": len(excluded),
            "skipped": len(skipped),
            "identities_without_usable_images": empty,
            "splits": splits,
        },
        "excluded": excluded,
        "skipped": skipped,
        "notes": [{"path": i.candidate.source, "note": i.note} for i in checked if i.ok and i.note],
    }
