"""Dataset sources: anything that yields a :class:`Manifest` (rows of path + identity).

``embed`` and the parity check of ``export-onnx`` accept a manifest file or a plain folder;
both end up here, so every later step reads one format.
"""

from __future__ import annotations

from pathlib import Path

from petkit.data import manifest as mf
from petkit.data.prepare import discover
from petkit.errors import PetkitError
from petkit.registry import DATASETS


@DATASETS.register("manifest")
def manifest_source(path: str) -> mf.Manifest:
    """A manifest.csv written by 'petkit prepare' or by hand (path,identity[,split,...])."""
    return mf.read_manifest(path)


@DATASETS.register("folder")
def folder_source(path: str, flatten_distortion: bool = False) -> mf.Manifest:
    """<identity>/<image> folders read as they are (no checks: use 'petkit prepare' for those)."""
    root = Path(path)
    candidates, _ = discover(root, flatten_distortion)
    if not candidates:
        raise PetkitError(f"no images found in {root}", "expected <identity>/<image> folders")
    rows = [{mf.PATH: c.path.relative_to(root).as_posix(), mf.IDENTITY: c.identity} for c in candidates]
    return mf.Manifest(root.resolve(), rows, [mf.PATH, mf.IDENTITY])


def open_source(path: str | Path) -> mf.Manifest:
    """A manifest file or an identity-folder tree, whichever ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return DATASETS.build({"name": "folder", "args": {"path": str(path)}})
    return DATASETS.build({"name": "manifest", "args": {"path": str(path)}})
