"""Re-ranking: similarities [Q, G] recomputed from the neighbourhood structure of the embeddings.

- ``k_reciprocal``: Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
  Encoding", CVPR 2017. Two images are close when their k-reciprocal neighbour sets overlap
  (a Jaccard distance on soft neighbour vectors), blended with the original distance by
  ``lambda_``. Memory and time grow with (Q + G)^2: meant for galleries of up to ~10k images.
  Defaults k1=6, k2=3 suit pet galleries of a handful of photos per individual; the paper's
  k1=20, k2=6 (person re-ID, dozens per person) cost 0.08 Recall@1 on dogfacenet-dev
  (benchmarks/bench_openset.py).
- ``query_expansion``: alpha-weighted query expansion (Radenovic et al., TPAMI 2019): each query
  is replaced by the normalised sum of itself and its ``n`` nearest gallery images weighted by
  similarity^alpha (alpha 0: plain average QE of Chum et al., ICCV 2007).

Both return a similarity matrix (higher is closer) for petkit.evaluation.metrics.
"""

from __future__ import annotations

import numpy as np

from petkit.errors import PetkitError

METHODS = ("none", "k_reciprocal", "query_expansion")


def rerank(method: str, query: np.ndarray, gallery: np.ndarray, same_set: bool, **args) -> np.ndarray | None:
    """Re-ranked similarity [Q, G], or None for 'none' (the caller uses plain inner products)."""
    if method == "none":
        return None
    if method == "k_reciprocal":
        return k_reciprocal(query, gallery, same_set, **args)
    if method == "query_expansion":
        return query_expansion(query, gallery, same_set, **args)
    raise PetkitError(f"unknown re-ranking '{method}'", f"use one of {', '.join(METHODS)}")


def k_reciprocal(query: np.ndarray, gallery: np.ndarray, same_set: bool = False, k1: int = 6, k2: int = 3,
                 lambda_: float = 0.3) -> np.ndarray:
    """Negative of the k-reciprocal re-ranked distance (so that higher is closer)."""
    items = gallery if same_set else np.concatenate([query, gallery])
    n_query = len(query)
    distance = np.clip(2.0 - 2.0 * (items @ items.T), 0.0, None).astype(np.float32)  # squared euclidean
    distance /= np.maximum(distance.max(axis=1, keepdims=True), 1e-12)  # per row, as in the paper
    ranks = np.argsort(distance, axis=1, kind="stable")
    weights = _neighbour_weights(distance, ranks, k1)
    if k2 > 1:  # local query expansion in the neighbour-vector space
        weights = weights[ranks[:, :k2]].mean(axis=1)
    gallery_rows = np.arange(len(items)) if same_set else np.arange(n_query, len(items))
    jaccard = _jaccard(weights, np.arange(n_query), gallery_rows)
    original = distance[:n_query][:, gallery_rows]
    return -(jaccard * (1 - lambda_) + original * lambda_)


def _reciprocal(ranks: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ranks[i, :k + 1]
    backward = ranks[forward, :k + 1]
    return forward[(backward == i).any(axis=1)]


def _neighbour_weights(distance: np.ndarray, ranks: np.ndarray, k1: int) -> np.ndarray:
    """Row i: Gaussian-weighted, normalised membership of i's expanded k-reciprocal set."""
    n = len(distance)
    weights = np.zeros((n, n), dtype=np.float32)
    half = int(round(k1 / 2))
    for i in range(n):
        core = _reciprocal(ranks, i, k1)
        expanded = [core]
        for candidate in core:
            theirs = _reciprocal(ranks, candidate, half)
            if len(np.intersect1d(theirs, core)) > 2 / 3 * len(theirs):
                expanded.append(theirs)
        members = np.unique(np.concatenate(expanded))
        w = np.exp(-distance[i, members])
        weights[i, members] = w / w.sum()
    return weights


def _jaccard(weights: np.ndarray, query_rows: np.ndarray, gallery_rows: np.ndarray) -> np.ndarray:
    """1 - sum(min) / sum(max) of the neighbour vectors; rows sum to 1, so sum(max) = 2 - sum(min)."""
    out = np.empty((len(query_rows), len(gallery_rows)), dtype=np.float32)
    gallery_weights = weights[gallery_rows]
    for r, i in enumerate(query_rows):
        support = np.nonzero(weights[i])[0]  # only shared neighbours contribute to the minimum
        shared = np.minimum(gallery_weights[:, support], weights[i, support]).sum(axis=1)
        out[r] = 1.0 - shared / (2.0 - shared)
    return out


def query_expansion(query: np.ndarray, gallery: np.ndarray, same_set: bool = False, n: int = 2,
                    alpha: float = 3.0) -> np.ndarray:
    """Similarity of the expanded queries to the gallery."""
    scores = query @ gallery.T
    if same_set:
        np.fill_diagonal(scores, -np.inf)  # a query must not expand with itself
    top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    top_scores = np.take_along_axis(scores, top, axis=1)
    w = np.clip(top_scores, 0.0, None) ** alpha
    expanded = query + (w[..., None] * gallery[top]).sum(axis=1)
    expanded /= np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)
    return expanded @ gallery.T
