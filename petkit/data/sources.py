"""Dataset sources: anything that yields a :class:`Manifest` (rows of path + identity).

``embed`` and the parity check of ``export-onnx`` accept any of them and ``open_source`` tells
which one a path is, so every later step reads one format:

- ``manifest``: manifest.csv (or any CSV with path,identity[,split,role,is_fake,...]);
- ``folder``: ``<identity>/<image>`` folders, with ``distortion/`` and ``fake/`` sub-folders;
- ``course_verification``: ``known/<identity>/``, ``unknown_dev/`` + ``verification_dev.csv``,
  ``unknown_test/`` (the course challenge);
- ``pairs``: a pairs CSV (pair_id,path_a,path_b[,same]); its distinct images, unlabelled.
"""

from __future__ import annotations

from pathlib import Path

from petkit.data import manifest as mf
from petkit.data.images import is_image_name
from petkit.data.pairs import is_pairs_file, pairs_manifest, read_pairs
from petkit.data.prepare import discover, is_course_layout
from petkit.errors import PetkitError
from petkit.registry import DATASETS


@DATASETS.register("manifest")
def manifest_source(path: str) -> mf.Manifest:
    """A manifest.csv written by 'petkit prepare' or by hand (path,identity[,split,...])."""
    return mf.read_manifest(path)


@DATASETS.register("folder")
def folder_source(path: str, flatten_distortion: bool = False) -> mf.Manifest:
    """<identity>/<image> folders read as they are (no checks: use 'petkit prepare' for those)."""
    return _from_candidates(Path(path), flatten_distortion, "expected <identity>/<image> folders")


@DATASETS.register("course_verification")
def course_source(path: str) -> mf.Manifest:
    """known/<identity>/ (train, gallery), unknown_dev/ + verification_dev.csv (val queries), unknown_test/ (test queries)."""
    if not is_course_layout(Path(path)):
        raise PetkitError(f"{path} is not the course layout", "expected known/<identity>/ beside unknown_dev/ and/or unknown_test/")
    return _from_candidates(Path(path), False, "expected images in known/<identity>/, unknown_dev/, unknown_test/")


@DATASETS.register("pairs")
def pairs_source(path: str) -> mf.Manifest:
    """The distinct images of a pairs CSV (pair_id,path_a,path_b[,same]) as unlabelled queries."""
    return pairs_manifest(read_pairs(path))


@DATASETS.register("images")
def images_source(path: str) -> mf.Manifest:
    """One image, or every image under a folder (recursively), unlabelled: what 'petkit search' asks about."""
    root = Path(path)
    if root.is_file():
        return mf.Manifest(root.parent.resolve(), [{mf.PATH: root.name, mf.IDENTITY: "", mf.ROLE: "query"}], [mf.PATH, mf.IDENTITY, mf.ROLE])
    if not root.is_dir():
        raise PetkitError(f"not found: {root}", "pass an image file or a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p) and not any(part.startswith(".") for part in p.parts))
    if not paths:
        raise PetkitError(f"no images found under {root}", "image files end in .jpg, .png, .pgm, ...")
    rows = [{mf.PATH: p.relative_to(root).as_posix(), mf.IDENTITY: "", mf.ROLE: "query"} for p in paths]
    return mf.Manifest(root.resolve(), rows, [mf.PATH, mf.IDENTITY, mf.ROLE])


def _from_candidates(root: Path, flatten_distortion: bool, hint: str) -> mf.Manifest:
    candidates, _ = discover(root, flatten_distortion)
    if not candidates:
        raise PetkitError(f"no images found in {root}", hint)
    rows = [{mf.PATH: c.path.relative_to(root).as_posix(), mf.IDENTITY: c.identity, **c.extra} for c in candidates]
    extra = sorted({key for c in candidates for key in c.extra})
    return mf.Manifest(root.resolve(), rows, [mf.PATH, mf.IDENTITY, *extra])


def detect_format(path: str | Path) -> str:
    """Which registered source reads ``path``: course_verification, folder (identity folders),
    images (a flat folder or one image file), pairs or manifest."""
    path = Path(path)
    if is_course_layout(path):
        return "course_verification"
    if path.is_dir():
        return "images" if _flat_image_folder(path) else "folder"
    if is_image_name(path):
        return "images"
    return "pairs" if is_pairs_file(path) else "manifest"


def _flat_image_folder(path: Path) -> bool:
    """Images directly inside and no sub-folders: unlabelled photos (a test set), not identities."""
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    return any(e.is_file() and is_image_name(e) for e in entries) and not any(e.is_dir() for e in entries)


def open_source(path: str | Path, fmt: str | None = None) -> mf.Manifest:
    """The manifest of any dataset source; ``fmt`` names a registered source, else it is detected."""
    return DATASETS.build({"name": fmt or detect_format(path), "args": {"path": str(path)}})
