"""A served gallery: enrolled photos of identities in a folder that survives crashes.

The folder holds::

    snapshot.npz     vectors, identities and photo ids (format petkit.gallery), written atomically
    journal.log      every enrol and delete since the snapshot, one checksummed line each, fsynced
    thumbnails/      one JPEG per enrolled photo, named by the hash of the uploaded bytes
    .lock            held by the one process serving the folder

An enrol or delete is appended to the journal and fsynced before it is applied (and before the
service answers), so an acknowledged change survives ``kill -9`` or a power cut; start-up replays
the journal onto the snapshot. A request is one journal line, so a multi-photo enrolment is there
entirely or not at all; a torn last line (the process died while writing it, so nobody was told it
succeeded) is dropped, a damaged line before the end refuses to start. :meth:`Gallery.compact` folds
the journal into a new snapshot (records carry a sequence number, so a crash between writing the
snapshot and emptying the journal replays nothing twice).

Searching reads a faiss index of the live photos: exact (``flat``) up to ``AUTO_IVF_AT`` photos,
an inverted file (``ivf``) beyond, both with real removal (faiss ``remove_ids``). Writers are
serialised; searches run concurrently with each other and never see a half-applied change.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from petkit.embeddings import check_vectors
from petkit.errors import PetkitError
from petkit.io import RunLock, atomic_path, load_versioned_npz, umask
from petkit.retrieval.index import _default_params, group_neighbours

FORMAT = "petkit.gallery"
VERSION = 1
SNAPSHOT, JOURNAL, THUMBNAILS = "snapshot.npz", "journal.log", "thumbnails"
INDEX_KINDS = ("auto", "flat", "ivf")
# flat search at 200k x 128-d is ~25 ms per query on 2 cores (benchmarks/bench_serve.py); beyond it an IVF
# index answers in about a millisecond at the default nprobe
AUTO_IVF_AT = 200_000
THUMBNAIL_SIDE = 256  # px, the longer side of a stored thumbnail
COMPACT_EVERY = 10_000  # journal records before the journal is folded into a new snapshot
IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PHOTO_ID = re.compile(r"[0-9a-f]{32}")
IDENTITY_HINT = "an identity is 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"


def photo_id(data: bytes) -> str:
    """The name of an uploaded photo: a hash of its bytes (no client string reaches a file path)."""
    return hashlib.sha256(data).hexdigest()[:32]


def check_identity(name: str) -> str:
    if not isinstance(name, str) or not IDENTITY.fullmatch(name):
        raise PetkitError(f"identity {name[:60]!r} is not a valid name", IDENTITY_HINT)
    return name


@dataclass
class Enrolled:
    photo: str
    created: bool  # False: this photo was already enrolled under this identity


@dataclass
class Candidate:
    identity: str
    score: float
    photos: list[tuple[str, float]]  # (photo id, score) of this identity's closest photos, best first


class _Rows:
    """Growable arrays of the gallery's photos (doubling, so enrolling one photo into 1M is O(1))."""

    def __init__(self, dim: int, capacity: int = 1024):
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.identities: list[str] = []
        self.photos: list[str] = []
        self.alive: list[bool] = []

    def __len__(self) -> int:
        return len(self.photos)

    def append(self, vectors: np.ndarray, identities: list[str], photos: list[str]) -> np.ndarray:
        start, n = len(self), len(vectors)
        if start + n > len(self.vectors):
            grown = np.zeros((max(2 * len(self.vectors), start + n), self.vectors.shape[1]), dtype=np.float32)
            grown[:start] = self.vectors[:start]
            self.vectors = grown
        self.vectors[start:start + n] = vectors
        self.identities += identities
        self.photos += photos
        self.alive += [True] * n
        return np.arange(start, start + n, dtype=np.int64)


class Gallery:
    """Open with :meth:`open` (existing folder) or :meth:`create`; close (or use as a context manager) to release the lock."""

    def __init__(self, folder: Path, fingerprint: str, model: str, dim: int, calibration: dict | None, index_kind: str):
        if index_kind not in INDEX_KINDS:
            raise PetkitError(f"unknown gallery index kind '{index_kind}'", f"use one of {', '.join(INDEX_KINDS)}")
        self.folder, self.fingerprint, self.model, self.dim = folder, fingerprint, model, dim
        self.calibration, self.index_kind = calibration, index_kind
        self.rows = _Rows(dim)
        self.by_photo: dict[str, int] = {}
        self.by_identity: dict[str, list[int]] = {}
        self.seq = 0  # the last journal record applied
        self.journal_records = 0
        self._write = threading.Lock()  # one writer at a time (journal order = apply order)
        self._index_lock = _ReadWriteLock()
        self._journal = None
        self._lock: RunLock | None = None
        self.kind = "flat"
        self.index = self._new_index("flat", np.zeros((0, dim), dtype=np.float32))

    # ---- opening

    @classmethod
    def create(cls, folder: str | Path, fingerprint: str, model: str, dim: int, calibration: dict | None = None) -> Gallery:
        """A new empty gallery folder for a model's embeddings (refused where a gallery already is)."""
        folder = Path(folder)
        if (folder / SNAPSHOT).exists() or (folder / JOURNAL).exists():
            raise PetkitError(f"{folder} already holds a gallery", "choose another folder, or enrol into it through the service")
        check_vectors(np.zeros((1, dim), dtype=np.float32), fingerprint, "the gallery")
        gallery = cls(folder, fingerprint, model, dim, calibration, "auto")
        gallery._lock = RunLock(folder, "petkit gallery")
        (folder / THUMBNAILS).mkdir(exist_ok=True)
        gallery._save_snapshot()
        gallery._open_journal()
        return gallery

    @classmethod
    def describe(cls, folder: str | Path) -> dict:
        """What a gallery folder holds, read without locking or changing it (it may be being served)."""
        gallery = cls.open(folder, read_only=True)
        return {"folder": str(folder), "photos": len(gallery), "identities": gallery.n_identities, "model": gallery.model,
                "fingerprint": gallery.fingerprint, "dimensions": gallery.dim, "index": gallery.kind,
                "journal records": gallery.journal_records, "threshold": (gallery.calibration or {}).get("threshold", "none")}

    @classmethod
    def open(cls, folder: str | Path, fingerprint: str | None = None, index_kind: str = "auto", read_only: bool = False) -> Gallery:
        """The gallery in ``folder`` with its journal replayed; ``fingerprint``: refuse another model's gallery.

        ``read_only``: no lock, nothing on disk changed, no journal to write (to describe a served gallery).
        """
        folder = Path(folder)
        hint = f"create it with 'petkit gallery init {folder} --from gallery.index' (or --model MODEL for an empty one)"
        if not (folder / SNAPSHOT).is_file():
            raise PetkitError(f"{folder} is not a petkit gallery (no {SNAPSHOT})", hint)
        held = None if read_only else RunLock(folder, "petkit serve")
        try:
            arrays = load_versioned_npz(folder / SNAPSHOT, FORMAT, VERSION, "gallery snapshot", hint)
            try:
                meta = json.loads(str(arrays["meta"]))
                vectors, identities, photos = arrays["vectors"], arrays["identities"].astype(str), arrays["photos"].astype(str)
                gallery = cls(folder, str(meta["fingerprint"]), str(meta["model"]), int(meta["dim"]), meta.get("calibration"), index_kind)
                seq = int(meta["seq"])
            except (KeyError, TypeError, ValueError) as exc:
                raise PetkitError(f"{folder / SNAPSHOT} is damaged ({type(exc).__name__}: {exc})", "restore the gallery folder from a backup") from exc
            if fingerprint is not None and fingerprint != gallery.fingerprint:
                raise PetkitError(f"the gallery {folder} holds embeddings of model {gallery.fingerprint}, not of this model ({fingerprint})",
                                  "serve it with the model it was made with, or build a gallery for this model with 'petkit gallery init'")
            if len(vectors):
                check_vectors(vectors, gallery.fingerprint, str(folder / SNAPSHOT))
            if not (len(vectors) == len(identities) == len(photos)) or (len(vectors) and vectors.shape[1] != gallery.dim):
                raise PetkitError(f"{folder / SNAPSHOT}: vectors, identities and photos differ in number or size", "restore the gallery from a backup")
            gallery._lock = held
            gallery._apply_enrol(vectors.astype(np.float32), list(identities), list(photos), index=False)
            gallery.seq = seq
            gallery._replay(truncate=not read_only)
            if read_only:  # what the service would build, without building it
                gallery.kind = gallery._wanted_kind()
            else:
                gallery._rebuild_index()
                gallery._remove_orphan_thumbnails()
                gallery._open_journal()
            return gallery
        except BaseException:
            if held:
                held.release()
            raise

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- what it holds

    def __len__(self) -> int:
        return len(self.by_photo)

    @property
    def n_identities(self) -> int:
        return len(self.by_identity)

    def identities(self) -> list[tuple[str, int]]:
        """(identity, photos) in enrolment order."""
        return [(name, len(rows)) for name, rows in self.by_identity.items()]

    def photos_of(self, identity: str) -> list[str]:
        rows = self.by_identity.get(identity)
        if rows is None:
            raise KeyError(identity)
        return [self.rows.photos[r] for r in rows]

    def identity_of(self, photo: str) -> str | None:
        row = self.by_photo.get(photo)
        return None if row is None else self.rows.identities[row]

    def thumbnail_path(self, photo: str) -> Path:
        if not PHOTO_ID.fullmatch(photo):
            raise KeyError(photo)
        return self.folder / THUMBNAILS / f"{photo}.jpg"

    # ---- changing it (each change: thumbnails on disk, then the journal line fsynced, then applied)

    def enrol(self, identity: str, vectors: np.ndarray, photos: list[str], thumbnails: list[bytes | None]) -> list[Enrolled]:
        """Enrol photos (ids from :func:`photo_id`) of one identity; a photo already enrolled under it is kept as it is.

        Raises PetkitError when a photo is enrolled under another identity (nothing is changed then).
        """
        check_identity(identity)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(photos), self.dim) or len(thumbnails) != len(photos):
            raise PetkitError(f"expected {len(photos)} vectors of {self.dim} dimensions, got {vectors.shape}")
        check_vectors(vectors, self.fingerprint, "the photos to enrol")
        with self._write:
            result, new = [], {}
            for photo, vector, thumb in zip(photos, vectors, thumbnails):
                if not PHOTO_ID.fullmatch(photo):
                    raise PetkitError(f"photo id {photo[:40]!r} is not a content hash")
                owner = self.identity_of(photo)
                if owner is not None and owner != identity:
                    raise PetkitError(f"this photo ({photo}) is already enrolled as {owner}", f"delete it first: DELETE /v1/photos/{photo}")
                result.append(Enrolled(photo, owner is None and photo not in new))
                if owner is None and photo not in new:
                    new[photo] = (vector, thumb)
            if not new:
                return result
            for photo, (_, thumb) in new.items():
                if thumb is not None:
                    with atomic_path(self.thumbnail_path(photo)) as tmp:
                        tmp.write_bytes(thumb)
            names = list(new)
            block = np.stack([v for v, _ in new.values()])
            self._log({"op": "enrol", "identity": identity, "photos": names, "vectors": _encode(block)})
            self._apply_enrol(block, [identity] * len(names), names)
            self._maybe_compact()
            return result

    def delete_identity(self, identity: str) -> int:
        """Forget an identity and its photos; returns how many photos went (KeyError when unknown)."""
        with self._write:
            rows = self.by_identity.get(identity)
            if rows is None:
                raise KeyError(identity)
            photos = [self.rows.photos[r] for r in rows]
            self._log({"op": "delete", "photos": photos})
            self._apply_delete(photos)
            self._maybe_compact()
            return len(photos)

    def delete_photo(self, photo: str) -> str:
        """Forget one photo; returns its identity (KeyError when unknown)."""
        with self._write:
            identity = self.identity_of(photo)
            if identity is None:
                raise KeyError(photo)
            self._log({"op": "delete", "photos": [photo]})
            self._apply_delete([photo])
            self._maybe_compact()
            return identity

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomically), then start an empty journal."""
        with self._write:
            self._compact()

    def _compact(self) -> None:
        self._save_snapshot()
        if self._journal is not None:
            self._journal.close()
        with atomic_path(self.folder / JOURNAL) as tmp:
            tmp.write_bytes(b"")
        self.journal_records = 0
        self._open_journal()
        self._remove_orphan_thumbnails()
        if self._wanted_kind() != self.kind:
            self._rebuild_index()

    # ---- searching

    def search(self, queries: np.ndarray, k: int, photos_per_identity: int = 3) -> list[list[Candidate]]:
        """The k most similar identities per query (each scored by its closest photo), best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._index_lock.reading():
            total = self.index.ntotal
            if total == 0:
                return [[] for _ in queries]
            k = min(k, len(self.by_identity))
            depth = min(total, max(4 * k, 16))
            while True:
                scores, ids = self.index.search(queries, depth)
                groups = group_neighbours(scores, ids, self.rows.identities, k, photos_per_identity)
                if all(len(g) == k for g in groups) or depth == total:
                    break
                depth = min(total, depth * 4)
            return [[Candidate(name, score, [(self.rows.photos[i], s) for i, s in members]) for name, score, members in g] for g in groups]

    # ---- internals

    def _log(self, record: dict) -> None:
        self.seq += 1
        line = json.dumps({"seq": self.seq, **record}, separators=(",", ":"))
        self._journal.write(f"{line}\t{zlib.crc32(line.encode()):08x}\n".encode())
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.journal_records += 1

    def _maybe_compact(self) -> None:
        if self.journal_records >= COMPACT_EVERY:
            self._compact()

    def _open_journal(self) -> None:
        path = self.folder / JOURNAL
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~umask())
        self._journal = os.fdopen(fd, "ab")
        _fsync_folder(self.folder)

    def _replay(self, truncate: bool = True) -> None:
        path = self.folder / JOURNAL
        if not path.is_file():
            return
        data = path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # after the last newline: empty, or a record cut off mid-write
        good_end = len(data) - len(torn)
        for number, raw in enumerate(lines, start=1):
            record = _decode_line(raw)
            if record is None:
                if number == len(lines) and not torn:  # the last complete-looking line failed its checksum: cut off too
                    good_end -= len(raw) + 1
                    break
                raise PetkitError(f"{path} is damaged at line {number} (a record before the end fails its checksum)",
                                  "restore the gallery folder from a backup; the lines before it are intact")
            if record["seq"] <= self.seq:
                continue  # already in the snapshot (a crash between snapshot and journal reset)
            self._apply_record(record, path, number)
            self.seq = record["seq"]
            self.journal_records += 1
        if truncate and good_end < len(data):  # drop the torn tail, so new records start on a clean line
            with open(path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    def _apply_record(self, record: dict, path: Path, number: int) -> None:
        try:
            if record["op"] == "enrol":
                vectors = _decode(record["vectors"], self.dim)
                photos = [str(p) for p in record["photos"]]
                identity = check_identity(str(record["identity"]))
                if len(vectors) != len(photos):
                    raise ValueError("vectors and photos differ in number")
                self._apply_enrol(vectors, [identity] * len(photos), photos, index=False)
            elif record["op"] == "delete":
                self._apply_delete([str(p) for p in record["photos"]], index=False)
            else:
                raise ValueError(f"unknown op {record['op']!r}")
        except (KeyError, TypeError, ValueError, PetkitError) as exc:
            raise PetkitError(f"{path} line {number} is not a gallery record ({exc})", "restore the gallery folder from a backup") from exc

    def _apply_enrol(self, vectors: np.ndarray, identities: list[str], photos: list[str], index: bool = True) -> None:
        with self._index_lock.writing():
            ids = self.rows.append(vectors, identities, photos)
            for row, identity, photo in zip(ids.tolist(), identities, photos):
                self.by_photo[photo] = row
                self.by_identity.setdefault(identity, []).append(row)
            if index:
                self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def _apply_delete(self, photos: list[str], index: bool = True) -> None:
        with self._index_lock.writing():
            rows = [self.by_photo.pop(p) for p in photos if p in self.by_photo]
            for row in rows:
                self.rows.alive[row] = False
                members = self.by_identity[self.rows.identities[row]]
                members.remove(row)
                if not members:
                    del self.by_identity[self.rows.identities[row]]
            if index and rows:
                self.index.remove_ids(np.array(rows, dtype=np.int64))
        if index:
            for photo in photos:
                with contextlib.suppress(OSError, KeyError):
                    self.thumbnail_path(photo).unlink()

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.fromiter(self.by_photo.values(), dtype=np.int64, count=len(self.by_photo))
        rows.sort()
        return self.rows.vectors[rows], rows

    def _wanted_kind(self) -> str:
        if self.index_kind != "auto":
            return self.index_kind
        return "ivf" if len(self) >= AUTO_IVF_AT else "flat"

    def _new_index(self, kind: str, train: np.ndarray) -> faiss.Index:
        if kind == "flat" or len(train) == 0:
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        params = _default_params("ivf", len(train))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)  # keeps its quantizer alive
        index.train(train)
        # 1/8 of the lists (faiss's rule of thumb) is recall@10 ~0.99 on clustered identities (bench_serve)
        index.nprobe = params["nprobe"]
        return index

    def _rebuild_index(self) -> None:
        vectors, rows = self._live()
        kind = self._wanted_kind()
        if kind == "ivf" and len(vectors) < 39:  # too few to train an inverted file: exact until there are
            kind = "flat"
        index = self._new_index(kind, vectors)
        if len(vectors):
            index.add_with_ids(vectors, rows)
        with self._index_lock.writing():
            self.index, self.kind = index, kind

    def _save_snapshot(self) -> None:
        vectors, rows = self._live()
        meta = {"fingerprint": self.fingerprint, "model": self.model, "dim": self.dim, "seq": self.seq, "calibration": self.calibration}
        with atomic_path(self.folder / SNAPSHOT) as tmp, tmp.open("wb") as handle:
            np.savez(handle, format=FORMAT, version=VERSION, meta=json.dumps(meta), vectors=vectors,
                     identities=np.array([self.rows.identities[r] for r in rows], dtype=str),
                     photos=np.array([self.rows.photos[r] for r in rows], dtype=str))
        _fsync_folder(self.folder)

    def _remove_orphan_thumbnails(self) -> None:
        """Thumbnails whose enrolment never reached the journal (a crash between the two), or of deleted photos."""
        folder = self.folder / THUMBNAILS
        folder.mkdir(exist_ok=True)
        for path in folder.iterdir():
            if path.suffix == ".jpg" and path.stem not in self.by_photo:
                with contextlib.suppress(OSError):
                    path.unlink()


def _encode(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, dim: int) -> np.ndarray:
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if len(data) % (4 * dim):
        raise ValueError(f"vector data of {len(data)} bytes is not a whole number of {dim}-d vectors")
    vectors = np.frombuffer(data, dtype="<f4").reshape(-1, dim).astype(np.float32)
    if not np.isfinite(vectors).all():
        raise ValueError("vectors hold NaN or infinity")
    return vectors


def _decode_line(raw: bytes) -> dict | None:
    body, sep, crc = raw.rpartition(b"\t")
    if not sep:
        return None
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record


def _fsync_folder(folder: Path) -> None:
    """A new or renamed file's directory entry on disk too (POSIX: the rename itself lives in the folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _ReadWriteLock:
    """Many readers (searches) or one writer (applying a change to the index), writers first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def init_gallery(folder: str | Path, source: str | Path | None = None, model: str | Path | None = None, split: str | None = None,
                 thumbnails: bool = True, progress=None, on_total=None) -> dict:
    """A new gallery in ``folder`` from what 'petkit index build' (.index) or 'petkit embed' (.npz) wrote, or empty for ``model``.

    Each photo is named by the hash of its file's bytes and gets a thumbnail when the file can still
    be read (a photo listed twice is enrolled once). Returns a summary (photos, identities, ...).
    """
    from concurrent.futures import ThreadPoolExecutor

    from petkit import embeddings as emb
    from petkit.retrieval.index import GalleryIndex

    if source is None and model is None:
        raise PetkitError("nothing to make the gallery from", "pass --from gallery.index (or embeddings.npz), or --model MODEL for an empty gallery")
    calibration = None
    if source is None:
        from petkit.engine.embedder import open_embedder

        embedder = open_embedder(model, "cpu")
        vectors, identities, paths = np.zeros((0, embedder.card.embedding_dim), dtype=np.float32), [], []
        fingerprint, model_path = embedder.fingerprint, str(Path(model).resolve())
    elif str(source).endswith(".index"):
        index = GalleryIndex.load(source)
        if split is not None:
            raise PetkitError("--split applies to an embeddings file; an index holds one gallery already", "leave --split out")
        vectors, identities, paths = index.vectors, [str(x) for x in index.labels], [str(p) for p in index.paths]
        fingerprint, model_path, calibration = index.fingerprint, index.model, index.calibration
    else:
        data = emb.load(source).where("splits", split).labelled_real()
        if not len(data):
            raise PetkitError(f"no labelled photos{f' with split {split!r}' if split else ''} in {source}", "check --split")
        vectors, identities, paths = data.vectors, [str(x) for x in data.identities], data.absolute_paths()
        fingerprint, model_path = data.fingerprint, data.model
    if model is not None and source is not None:
        from petkit.engine.embedder import open_embedder

        given = open_embedder(model, "cpu").fingerprint
        if given != fingerprint:
            raise PetkitError(f"{source} holds embeddings of model {fingerprint}, but --model {model} is model {given}",
                              "seed the gallery from embeddings of the model you will serve")
        model_path = str(Path(model).resolve())
    for name in sorted(set(identities)):
        check_identity(name)
    if on_total:
        on_total(len(paths))

    def read(path: str) -> tuple[str, bytes | None]:
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
        thumb = _thumbnail(path) if (thumbnails and data is not None) else None
        if progress:
            progress(1)
        # an unreadable photo is named by its vector instead (still a content hash, never a client string)
        return (photo_id(data) if data is not None else None), thumb

    with ThreadPoolExecutor(2) as pool:
        read_back = list(pool.map(read, paths))
    folder = Path(folder)
    gallery = Gallery.create(folder, fingerprint, model_path, int(vectors.shape[1]), calibration)
    try:
        keep, names, seen, duplicates, conflicts, missing = [], [], {}, 0, [], 0
        for row, ((pid, thumb), identity) in enumerate(zip(read_back, identities)):
            if pid is None:
                pid = photo_id(np.ascontiguousarray(vectors[row], dtype="<f4").tobytes())
                missing += 1
            if pid in seen:
                if seen[pid] != identity:
                    conflicts.append((paths[row], seen[pid], identity))
                else:
                    duplicates += 1
                continue
            seen[pid] = identity
            keep.append(row)
            names.append(pid)
            if thumb is not None:
                with atomic_path(gallery.thumbnail_path(pid)) as tmp:
                    tmp.write_bytes(thumb)
        rows = np.array(keep, dtype=np.int64)
        gallery._apply_enrol(vectors[rows] if len(rows) else vectors[:0], [identities[r] for r in keep], names)
        gallery._save_snapshot()
        summary = {"folder": str(folder), "photos": len(gallery), "identities": gallery.n_identities, "fingerprint": fingerprint,
                   "model": model_path, "without_thumbnail": sum(1 for r in keep if read_back[r][1] is None), "duplicates": duplicates,
                   "conflicts": conflicts, "unreadable": missing, "threshold": calibration["threshold"] if calibration else None}
    finally:
        gallery.close()
    return summary


def _thumbnail(path: str) -> bytes | None:
    from petkit.data.images import open_rgb

    try:
        return thumbnail_jpeg(open_rgb(path, min_size=THUMBNAIL_SIDE))
    except PetkitError:
        return None


def thumbnail_jpeg(image) -> bytes:
    """The stored form of an enrolled photo: at most THUMBNAIL_SIDE px on its longer side, JPEG."""
    import io

    from PIL import Image

    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BICUBIC)
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
