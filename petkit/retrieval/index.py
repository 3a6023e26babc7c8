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
from pathlib import Path

import faiss
import numpy as np

from petkit.errors import PetkitError
from petkit.io import atomic_path, load_versioned_npz

FORMAT = "petkit.index"
VERSION = 1
KINDS = ("flat", "ivf", "hnsw")


class GalleryIndex:
    def __init__(self, vectors: np.ndarray, labels: np.ndarray, kind: str = "flat", paths: np.ndarray | None = None,
                 fingerprint: str = "", model: str = "", params: dict | None = None, calibration: dict | None = None):
        if kind not in KINDS:
            raise PetkitError(f"unknown index kind '{kind}'", f"use one of {', '.join(KINDS)}")
        if len(vectors) == 0:
            raise PetkitError("the gallery is empty", "check the gallery split/role selection")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.labels = np.asarray(labels).astype(str)
        self.paths = np.asarray(paths).astype(str) if paths is not None else np.full(len(vectors), "", dtype=str)
        self.kind, self.fingerprint, self.model = kind, fingerprint, model
        self.params = _default_params(kind, len(vectors)) | (params or {})
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
        if self.fingerprint and fingerprint and fingerprint != self.fingerprint:
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
        meta = {"kind": self.kind, "params": self.params, "fingerprint": self.fingerprint, "model": self.model,
                "calibration": self.calibration}
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, format=FORMAT, version=VERSION, meta=json.dumps(meta), vectors=self.vectors,
                     labels=self.labels, paths=self.paths, faiss=faiss.serialize_index(self.index))

    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        arrays = load_versioned_npz(path, FORMAT, VERSION, "index", "build one with 'petkit index build GALLERY.npz -o gallery.index'")
        meta = json.loads(str(arrays["meta"]))
        index = cls.__new__(cls)
        index.vectors, index.labels, index.paths = arrays["vectors"], arrays["labels"].astype(str), arrays["paths"].astype(str)
        index.kind, index.params, index.fingerprint = meta["kind"], meta["params"], meta["fingerprint"]
        index.model, index.calibration = meta["model"], meta["calibration"]
        index.index = faiss.deserialize_index(arrays["faiss"])
        return index


def _default_params(kind: str, n: int) -> dict:
    if kind == "ivf":  # faiss's rule of thumb: about sqrt(n) lists, at least 39 training points per list
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        return {"nlist": nlist, "nprobe": max(1, nlist // 8)}
    if kind == "hnsw":
        return {"m": 32, "ef_construction": 200, "ef_search": 128}
    return {}


def _distinct(scores: np.ndarray, indices: np.ndarray, labels: np.ndarray, k: int):
    names, values = [], []
    for row_scores, row_indices in zip(scores, indices):
        seen: dict[str, float] = {}
        for score, index in zip(row_scores, row_indices):
            if index < 0:  # an approximate index may return fewer than asked
                continue
            label = str(labels[index])
            if label not in seen:
                seen[label] = float(score)
                if len(seen) == k:
                    break
        names.append(list(seen))
        values.append(list(seen.values()))
    return names, values
