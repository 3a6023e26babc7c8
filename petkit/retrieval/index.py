"""Exact inner-product search over a labelled gallery (faiss), ranked by image or by identity."""

from __future__ import annotations

import faiss
import numpy as np

from petkit.errors import PetkitError


class GalleryIndex:
    def __init__(self, vectors: np.ndarray, labels: np.ndarray):
        if len(vectors) == 0:
            raise PetkitError("the gallery is empty", "check the gallery split/role selection")
        self.labels = np.asarray(labels)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.n_identities = len(set(self.labels.tolist()))

    def __len__(self) -> int:
        return self.index.ntotal

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


def _distinct(scores: np.ndarray, indices: np.ndarray, labels: np.ndarray, k: int):
    names, values = [], []
    for row_scores, row_indices in zip(scores, indices):
        seen: dict[str, float] = {}
        for score, index in zip(row_scores, row_indices):
            label = str(labels[index])
            if label not in seen:
                seen[label] = float(score)
                if len(seen) == k:
                    break
        names.append(list(seen))
        values.append(list(seen.values()))
    return names, values
