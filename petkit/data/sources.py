"""Dataset sources: each reads one layout of photos into a :class:`~petkit.interfaces.Listing`.

``prepare`` checks the files a labelled source lists; ``embed``, the parity check of
``export-onnx`` and ``search`` read any source as a :class:`Manifest`. :func:`detect_format` asks
every registered source whether a path is in its layout, most specific first (``priority``):

- ``course_verification`` (petkit.data.course): ``known/<identity>/``, ``unknown_dev/`` +
  ``verification_dev.csv``, ``unknown_test/`` (the course challenge);
- ``pairs``: a pairs CSV (pair_id,path_a,path_b[,same]); its distinct images, unlabelled;
- ``images``: one image, or a flat folder of images (no sub-folders), unlabelled;
- ``split_folders``: ``train/ val|dev/ test/``, each of ``<identity>/<image>`` folders (ImageFolder per split);
- ``folder``: ``<identity>/<image>`` folders, with ``distortion/`` and ``fake/`` sub-folders;
- ``manifest``: manifest.csv (or any CSV with path,identity[,split,role,is_fake,...]); the fallback.
"""

from __future__ import annotations

from pathlib import Path

from petkit.data import manifest as mf
from petkit.data.images import is_image_name
from petkit.data.pairs import is_pairs_file, pairs_manifest, read_pairs
from petkit.errors import PetkitError
from petkit.interfaces import Candidate, DatasetSource, Listing
from petkit.registry import DATASETS

DISTORTION_DIR = "distortion"
FAKE_DIR = "fake"  # <identity>/fake/: forged images of that identity (is_fake = 1)
_IGNORED_NAMES = {"Thumbs.db", "desktop.ini"}


def hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _IGNORED_NAMES or path.name == "__MACOSX"


class FolderSource(DatasetSource):
    """<identity>/<image> folders; ``distortion/`` folded in with ``flatten_distortion``, ``fake/`` marked is_fake."""

    priority = 1
    empty_hint = "expected <identity>/<image> folders"

    def __init__(self, flatten_distortion: bool = False):
        self.flatten_distortion = flatten_distortion

    def detect(self, path: Path) -> bool:
        return path.is_dir()

    def scan(self, path: Path) -> Listing:
        candidates: list[Candidate] = []
        skipped: list[dict] = []
        for entry in sorted(path.iterdir()):
            if hidden(entry):
                continue
            if entry.is_file():
                reason = "not inside an identity folder (label unknown)" if is_image_name(entry) else "not an image"
                skipped.append({"path": entry.name, "reason": reason})
                continue
            for file in sorted(entry.rglob("*")):
                if file.is_dir() or hidden(file):
                    continue
                rel = file.relative_to(path).as_posix()
                depth = len(file.relative_to(entry).parts)
                if depth == 2 and file.parent.name == FAKE_DIR:
                    candidates.append(Candidate(file, entry.name, rel, {mf.IS_FAKE: "1"}))
                elif depth == 2 and file.parent.name == DISTORTION_DIR and self.flatten_distortion:
                    candidates.append(Candidate(file, entry.name, rel))
                elif depth == 1:
                    candidates.append(Candidate(file, entry.name, rel))
                elif file.parent.name == DISTORTION_DIR and depth == 2:
                    skipped.append({"path": rel, "reason": "in a distortion/ folder; pass --flatten-distortion to include it"})
                else:
                    skipped.append({"path": rel, "reason": "nested folder; images must sit directly in <identity>/ (or its distortion/, fake/)"})
        if any(c.extra.get(mf.IS_FAKE) == "1" for c in candidates):
            for c in candidates:
                c.extra.setdefault(mf.IS_FAKE, "0")
        return Listing(path, candidates, skipped)


SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


class SplitFoldersSource(DatasetSource):
    """``train/ val|dev/ test/`` folders, each of ``<identity>/<image>`` folders (torchvision ImageFolder per split):
    the folders are the splits (``dev``, ``valid``, ``validation`` read as ``val``)."""

    priority = 2
    empty_hint = "expected train/, val/ (or dev/) and test/ folders, each holding <identity>/<image> folders"

    def __init__(self, flatten_distortion: bool = False):
        self.folders = FolderSource(flatten_distortion)

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        entries = [e for e in path.iterdir() if not hidden(e)]
        folders = [e for e in entries if e.is_dir()]
        names = [e.name.lower() for e in folders]
        if "train" not in names or len(folders) != len(entries) or not all(n in SPLIT_DIRS for n in names):
            return False
        # the splits hold identity folders (not images directly: then train/ would be an identity called "train")
        return all(any(sub.is_dir() and not hidden(sub) for sub in folder.iterdir()) for folder in folders)

    def scan(self, path: Path) -> Listing:
        candidates: list[Candidate] = []
        skipped: list[dict] = []
        splits = {}
        for folder in sorted(e for e in path.iterdir() if e.is_dir() and not hidden(e)):
            split = SPLIT_DIRS[folder.name.lower()]
            if split in splits:
                raise PetkitError(f"{path} has two folders for the {split} split: {splits[split]}/ and {folder.name}/",
                                  "keep one of them (dev, valid and validation all mean val)")
            splits[split] = folder.name
            listing = self.folders.scan(folder)
            for c in listing.candidates:
                candidates.append(Candidate(c.path, c.identity, f"{folder.name}/{c.source}", {**c.extra, mf.SPLIT: split}))
            skipped += [{**item, "path": f"{folder.name}/{item['path']}"} for item in listing.skipped]
        return Listing(path, candidates, skipped)


class ManifestSource(DatasetSource):
    """A manifest.csv written by 'petkit prepare' or by hand (path,identity[,split,...])."""

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".csv"

    def read(self, path: Path) -> mf.Manifest:
        return mf.read_manifest(path)

    def scan(self, path: Path) -> Listing:
        """The rows as candidates for 'prepare' (which recomputes sha1, width and height, and records missing files)."""
        manifest = mf.read_manifest(path, check_files=False)
        extra_columns = [c for c in manifest.columns if c not in (mf.PATH, mf.IDENTITY, mf.SHA1, mf.WIDTH, mf.HEIGHT)]
        return Listing(manifest.root, [Candidate(manifest.abspath(row), row[mf.IDENTITY], row[mf.PATH],
                                                 {c: row.get(c, "") for c in extra_columns}) for row in manifest.rows])


class PairsSource(DatasetSource):
    """The distinct images of a pairs CSV (pair_id,path_a,path_b[,same]) as unlabelled queries."""

    labelled = False
    priority = 10

    def detect(self, path: Path) -> bool:
        return is_pairs_file(path)

    def read(self, path: Path) -> mf.Manifest:
        return pairs_manifest(read_pairs(path))

    def scan(self, path: Path) -> Listing:
        manifest = self.read(path)
        return Listing(manifest.root, [Candidate(manifest.abspath(r), "", r[mf.PATH], {mf.ROLE: "query"}) for r in manifest.rows])


class ImagesSource(DatasetSource):
    """One image, or every image under a folder (recursively), unlabelled: what 'petkit search' asks about."""

    labelled = False
    priority = 5

    def detect(self, path: Path) -> bool:
        if path.is_dir():  # images directly inside and no sub-folders: unlabelled photos, not identities
            entries = [e for e in path.iterdir() if not e.name.startswith(".")]
            return any(e.is_file() and is_image_name(e) for e in entries) and not any(e.is_dir() for e in entries)
        return is_image_name(path)

    def scan(self, path: Path) -> Listing:
        if path.is_file():
            return Listing(path.parent, [Candidate(path.resolve(), "", path.name, {mf.ROLE: "query"})])
        if not path.is_dir():
            raise PetkitError(f"not found: {path}", "pass an image file or a folder of images")
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p) and not any(part.startswith(".") for part in p.parts))
        if not files:
            raise PetkitError(f"no images found under {path}", "image files end in .jpg, .png, .pgm, ...")
        return Listing(path, [Candidate(p, "", p.relative_to(path).as_posix(), {mf.ROLE: "query"}) for p in files])


@DATASETS.register("manifest")
def manifest_source() -> ManifestSource:
    """A manifest.csv written by 'petkit prepare' or by hand (path,identity[,split,...])."""
    return ManifestSource()


@DATASETS.register("folder")
def folder_source(flatten_distortion: bool = False) -> FolderSource:
    """<identity>/<image> folders read as they are (no checks: use 'petkit prepare' for those)."""
    return FolderSource(flatten_distortion)


@DATASETS.register("split_folders")
def split_folders_source(flatten_distortion: bool = False) -> SplitFoldersSource:
    """train/, val/ (or dev/), test/ folders of <identity>/<image> folders: the folders are the splits."""
    return SplitFoldersSource(flatten_distortion)


@DATASETS.register("pairs")
def pairs_source() -> PairsSource:
    """The distinct images of a pairs CSV (pair_id,path_a,path_b[,same]) as unlabelled queries."""
    return PairsSource()


@DATASETS.register("images")
def images_source() -> ImagesSource:
    """One image, or every image under a folder (recursively), unlabelled: what 'petkit search' asks about."""
    return ImagesSource()


def build_source(name: str, **context) -> DatasetSource:
    """The registered source ``name``; ``context`` (e.g. flatten_distortion) reaches sources that take it."""
    return DATASETS.build({"name": name}, **context)


def detect_format(path: str | Path, labelled: bool = False) -> str:
    """Which registered source reads ``path`` (the highest ``priority`` whose ``detect`` says yes);
    ``labelled``: only sources whose rows carry identities. Nothing detected: ``manifest``."""
    path = Path(path)
    sources = [(name, build_source(name)) for name in DATASETS.names()]
    sources.sort(key=lambda item: -item[1].priority)
    for name, source in sources:
        if (source.labelled or not labelled) and source.detect(path):
            return name
    return "manifest"


def open_source(path: str | Path, fmt: str | None = None) -> mf.Manifest:
    """The manifest of any dataset source; ``fmt`` names a registered source, else it is detected."""
    return build_source(fmt or detect_format(path)).read(Path(path))
