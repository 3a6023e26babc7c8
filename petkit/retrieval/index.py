"""A labelled gallery in faiss: exact inner product by default, IVF or HNSW for large galleries.

Embeddings are L2-normalised, so inner product is cosine similarity. The gallery keeps its
vectors, identities and paths beside the faiss index, so identities can be added and removed
(the faiss index is rebuilt on removal, since HNSW cannot delete) and an approximate index can
be checked against exact search (``recall_against_exact``). A saved index (``.npz``, format
``petkit.index``) records the fingerprint of the model whose embeddings it holds, and refuses
embeddings of any other model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import faiss
import numpy as np

from petkit.embeddings import check_vectors
from petkit.errors import PetkitError
from petkit.io import atomic_path, load_versioned_npz
from petkit.limits import Range

FORMAT = "petkit.index"
VERSION = 2  # 2: the model path is stored relative to the index file's folder (1: as given, relative to the working directory)
KINDS = ("flat", "ivf", "hnsw")
# the parameters each kind uses, with their valid ranges (faiss aborts the process on hnsw m=0)
PARAMS = {
    "flat": {},
    "ivf": {"nlist": Range(1, 1 << 20), "nprobe": Range(1, 1 << 20)},
    "hnsw": {"m": Range(2, 256), "ef_construction": Range(1, 100_000), "ef_search": Range(1, 100_000)},
}


class GalleryIndex:
    def __init__(self, vectors: np.ndarray, labels: np.ndarray, kind: str = "flat", paths: np.ndarray | None = None,
                 fingerprint: str = "", model: str = "", params: dict | None = None, calibration: dict | None = None):
        if kind not in KINDS:
            raise PetkitError(f"unknown index kind '{kind}'", f"use one of {', '.join(KINDS)}")
        if len(vectors) == 0:
            raise PetkitError("the gallery is empty", "check the gallery split/role selection")
        check_vectors(np.asarray(vectors), fingerprint, "the gallery")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.labels = np.asarray(labels).astype(str)
        self.paths = np.asarray(paths).astype(str) if paths is not None else np.full(len(vectors), "", dtype=str)
        self.kind, self.fingerprint, self.model = kind, fingerprint, model
        self.params = _default_params(kind, len(vectors)) | check_params(kind, params or {})
        self.calibration = calibration
        self.index = self._build()

    # ---- building

    def _build(self) -> faiss.Index:
        d = self.vectors.shape[1]
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "ivf":
            nlist = min(int(self.params["nlist"]), len(self.vectors))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(self.vectors)
            index.nprobe = min(int(self.params["nprobe"]), nlist)
            self.params.update(nlist=nlist, nprobe=index.nprobe)  # what was used, not what was asked (a small gallery caps it)
        else:
            index = faiss.IndexHNSWFlat(d, int(self.params["m"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(self.params["ef_construction"])
            index.hnsw.efSearch = int(self.params["ef_search"])
        index.add(self.vectors)
        return index

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def n_identities(self) -> int:
        return len(set(self.labels.tolist()))

    def add(self, vectors: np.ndarray, labels: np.ndarray, paths: np.ndarray | None = None, fingerprint: str = "") -> None:
        """Enrol more images (new identities or more images of known ones)."""
        check_vectors(np.asarray(vectors), fingerprint, "the images to add")
        self.require_model(fingerprint, "the images to add")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.vectors.shape[1]:
            raise PetkitError(f"the images to add are {vectors.shape[1]}-d; the index holds {self.vectors.shape[1]}-d vectors")
        self.vectors = np.concatenate([self.vectors, vectors])
        self.labels = np.concatenate([self.labels, np.asarray(labels).astype(str)])
        extra = np.asarray(paths).astype(str) if paths is not None else np.full(len(vectors), "", dtype=str)
        self.paths = np.concatenate([self.paths, extra])
        self.index.add(vectors)

    def remove(self, identities: list[str]) -> int:
        """Forget every image of these identities; returns how many images went."""
        unknown = sorted(set(identities) - set(self.labels.tolist()))
        if unknown:
            raise PetkitError(f"identity not in the index: {', '.join(unknown)}", "see 'petkit index info' for the enrolled identities")
        keep = ~np.isin(self.labels, identities)
        if not keep.any():
            raise PetkitError("removing these identities would leave the index empty", "build a new index instead")
        removed = int((~keep).sum())
        self.vectors, self.labels, self.paths = self.vectors[keep], self.labels[keep], self.paths[keep]
        self.index = self._build()
        return removed

    def require_model(self, fingerprint: str, what: str) -> None:
        if fingerprint != self.fingerprint:
            raise PetkitError(
                f"{what} come from model {fingerprint}, but the index holds embeddings of model {self.fingerprint}: they are not comparable",
                f"embed with the index's model ({self.model or 'the one recorded in the index'}) or rebuild the index with the new model",
            )

    # ---- searching

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the k most similar gallery images, best first."""
        k = min(k, len(self))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def top_identities(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], list[list[float]]]:
        """The k best distinct identities per query, each scored by its most similar image.

        Searches a widening neighbourhood until every query has k distinct identities (or
        the whole gallery was seen), so the answer equals a full per-identity max.
        """
        k = min(k, self.n_identities)
        depth = min(len(self), max(4 * k, 16))
        while True:
            scores, indices = self.search(queries, depth)
            names, values = _distinct(scores, indices, self.labels, k)
            if all(len(row) == k for row in names) or depth == len(self):
                return names, values
            depth = min(len(self), depth * 4)

    def recall_against_exact(self, queries: np.ndarray, k: int = 10) -> float:
        """Share of the exact top-k neighbours that this index returns (1.0 for flat)."""
        k = min(k, len(self))
        exact = faiss.IndexFlatIP(self.vectors.shape[1])
        exact.add(self.vectors)
        _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        _, found = self.search(queries, k)
        return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found)]))

    # ---- files

    def save(self, path: str | Path) -> None:
        meta = {"kind": self.kind, "params": self.params, "fingerprint": self.fingerprint, "model": _relative(self.model, Path(path).parent),
                "calibration": self.calibration}
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, format=FORMAT, version=VERSION, meta=json.dumps(meta), vectors=self.vectors,
                     labels=self.labels, paths=self.paths, faiss=faiss.serialize_index(self.index))

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        hint = "build one with 'petkit index build GALLERY.npz -o gallery.index'"
        arrays = load_versioned_npz(path, FORMAT, VERSION, "index", hint)
        index = cls.__new__(cls)
        try:
            meta = json.loads(str(arrays["meta"]))
            index.vectors, index.labels, index.paths = arrays["vectors"], arrays["labels"].astype(str), arrays["paths"].astype(str)
            index.kind, index.params, index.fingerprint = str(meta["kind"]), check_params(meta["kind"], meta["params"]), str(meta["fingerprint"])
            index.model, index.calibration = str(meta["model"]), meta["calibration"]
            blob = arrays["faiss"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PetkitError(f"{path} is a damaged index ({type(exc).__name__}: {exc})", hint) from exc
        check_vectors(index.vectors, index.fingerprint, str(path))
        if not (len(index.vectors) == len(index.labels) == len(index.paths)) or not len(index.vectors):
            raise PetkitError(f"{path}: the vectors, identities and paths differ in number (or are empty)", hint)
        if index.calibration is not None and not (isinstance(index.calibration, dict) and _is_similarity(index.calibration.get("threshold"))):
            raise PetkitError(f"{path}: the stored threshold is not a number in [-1, 1]", hint)
        if int(arrays["version"]) >= 2 and index.model and not Path(index.model).is_absolute():
            index.model = str((Path(path).parent / index.model).resolve())
        try:
            index.index = faiss.deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError with a C++ backtrace for a damaged blob
            raise PetkitError(f"{path}: the faiss index inside is damaged ({str(exc).strip().splitlines()[0][:160]})", hint) from exc
        if index.index.ntotal != len(index.vectors) or index.index.d != index.vectors.shape[1]:
            raise PetkitError(f"{path}: the faiss index holds {index.index.ntotal} x {index.index.d}, the gallery {index.vectors.shape}", hint)
        return index


def check_params(kind: str, params: dict) -> dict:
    """``params`` if every one is a parameter of ``kind`` and an integer in its range; else one clear error."""
    if kind not in PARAMS:
        raise PetkitError(f"unknown index kind '{kind}'", f"use one of {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise PetkitError(f"index parameters must be KEY=VALUE pairs, got {params!r}")
    allowed = PARAMS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        hint = f"the {kind} index takes {', '.join(allowed)}" if allowed else f"the {kind} index takes no parameters"
        raise PetkitError(f"--param {', '.join(unknown)} does not apply to a {kind} index (it would be stored but never used)", hint)
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise PetkitError(f"--param {name}={value!r} must be a whole number")
        allowed[name].check(value, f"--param {name}")
    return dict(params)


def _is_similarity(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1.0 <= value <= 1.0


def _relative(model: str, folder: Path) -> str:
    """A model path as the index stores it: relative to the index's folder, so either can be moved with the other."""
    if not model:
        return model
    try:
        return os.path.relpath(Path(model).resolve(), folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(Path(model).resolve())


def _default_params(kind: str, n: int) -> dict:
    if kind == "ivf":  # faiss's rule of thumb: about sqrt(n) lists, at least 39 training points per list
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        return {"nlist": nlist, "nprobe": max(1, nlist // 8)}
    if kind == "hnsw":
        return {"m": 32, "ef_construction": 200, "ef_search": 128}
    return {}


def group_neighbours(scores: np.ndarray, indices: np.ndarray, labels, k: int, members: int = 0) -> list[list[tuple[str, float, list]]]:
    """Per query, the first ``k`` distinct labels among its neighbours (best first), each with its best
    score and up to ``members`` (index, score) pairs of its own neighbours, best first."""
    out = []
    for row_scores, row_indices in zip(scores, indices):
        seen: dict[str, list] = {}
        for score, index in zip(row_scores.tolist(), row_indices.tolist()):
            if index < 0:  # an approximate index may return fewer than asked
                continue
            label = str(labels[index])
            entry = seen.get(label)
            if entry is None:
                if len(seen) == k:
                    if not members:
                        break
                    continue
                entry = seen[label] = [label, float(score), []]
            if len(entry[2]) < members:
                entry[2].append((int(index), float(score)))
        out.append([tuple(entry) for entry in seen.values()])
    return out


def _distinct(scores: np.ndarray, indices: np.ndarray, labels: np.ndarray, k: int):
    groups = group_neighbours(scores, indices, labels, k)
    return [[g[0] for g in row] for row in groups], [[g[1] for g in row] for row in groups]
