"""Metric functions: numpy in, numbers out, no I/O and no model.

Embeddings are L2-normalised, so similarity is the inner product (cosine). Retrieval
definitions follow the metric-learning literature and pytorch-metric-learning's
AccuracyCalculator (Musgrave et al., "A Metric Learning Reality Check", 2020):

- ``recall@k`` (CMC top-k): share of queries with a same-identity image among the k
  nearest gallery images;
- ``precision@k``: share of same-identity images among the k nearest;
- ``top{k}_accuracy``: the true identity is among the k best *distinct* identities, each
  scored by its best-matching image (the cat-face challenge's top-3 rule);
- ``mAP``: mean average precision over the full ranking;
- ``mAP@R`` and ``R-precision`` with R = the query's number of relevant gallery images.

Queries whose identity has no image in the gallery are left out of every retrieval number
and counted in ``queries_without_match``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 1024  # queries per similarity block: bounds memory at BLOCK x gallery floats


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    queries: int  # queries that have at least one relevant gallery item
    queries_without_match: int
    gallery: int


def retrieval_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: tuple[int, ...] = (1, 3, 5, 10),
    leave_one_out: bool = False,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
) -> RetrievalResult:
    """Ranking metrics of every query against the gallery.

    ``leave_one_out``: query and gallery are the same set; each image is left out of its own
    ranking. ``*_groups`` (e.g. the manifest's ``sequence``): a gallery image in the query's
    own non-empty group is left out of its ranking.
    """
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    sums: dict[str, float] = {}
    counted = 0
    for start in range(0, len(query), BLOCK):
        stop = min(start + BLOCK, len(query))
        scores = query[start:stop] @ gallery.T
        excluded = _exclusions(start, stop, len(gallery), leave_one_out, query_groups, gallery_groups)
        block = _rank_block(scores, excluded, query_labels[start:stop], gallery_labels, ks)
        counted += block.pop("_count")
        for key, value in block.items():
            sums[key] = sums.get(key, 0.0) + value
    metrics = {key: (value / counted if counted else float("nan")) for key, value in sums.items()}
    return RetrievalResult(metrics, counted, len(query) - counted, len(gallery))


def _exclusions(start, stop, n_gallery, leave_one_out, query_groups, gallery_groups) -> np.ndarray:
    excluded = np.zeros((stop - start, n_gallery), dtype=bool)
    if leave_one_out:
        rows = np.arange(stop - start)
        excluded[rows, rows + start] = True
    if query_groups is not None and gallery_groups is not None:
        q = np.asarray(query_groups)[start:stop]
        same = q[:, None] == np.asarray(gallery_groups)[None, :]
        excluded |= same & (q[:, None] != "")
    return excluded


def _rank_block(scores, excluded, q_labels, g_labels, ks) -> dict[str, float]:
    scores = np.where(excluded, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_scores = np.take_along_axis(scores, order, axis=1)
    present = np.isfinite(ranked_scores)
    relevant = (g_labels[order] == q_labels[:, None]) & present
    n_relevant = relevant.sum(axis=1)
    keep = n_relevant > 0
    relevant, order, n_relevant = relevant[keep], order[keep], n_relevant[keep]
    out: dict[str, float] = {"_count": int(keep.sum())}
    if not out["_count"]:
        return out
    positions = np.arange(1, relevant.shape[1] + 1)
    hits_so_far = np.cumsum(relevant, axis=1)
    precision_at = hits_so_far / positions
    for k in ks:
        out[f"recall@{k}"] = float(relevant[:, :k].any(axis=1).sum())
        out[f"precision@{k}"] = float((hits_so_far[:, min(k, relevant.shape[1]) - 1] / k).sum())
        out[f"top{k}_accuracy"] = float(_identity_topk(order, relevant, g_labels, k).sum())
    out["mAP"] = float(((precision_at * relevant).sum(axis=1) / n_relevant).sum())
    within_r = positions[None, :] <= n_relevant[:, None]
    out["mAP@R"] = float(((precision_at * relevant * within_r).sum(axis=1) / n_relevant).sum())
    out["R-precision"] = float(((relevant & within_r).sum(axis=1) / n_relevant).sum())
    return out


def _identity_topk(order: np.ndarray, relevant: np.ndarray, g_labels: np.ndarray, k: int) -> np.ndarray:
    """Is the true identity among the first k distinct identities of each ranking?"""
    hits = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        seen: set = set()
        for j in range(order.shape[1]):
            label = g_labels[order[i, j]]
            if label in seen:
                continue
            if relevant[i, j]:
                hits[i] = True
                break
            seen.add(label)
            if len(seen) >= k:
                break
    return hits


# ---------------------------------------------------------------------------------------
# verification: same / different pairs


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (accept when score >= t)."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, same = scores[order], same[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(same)[last_of_tie]
    fp = np.cumsum(~same)[last_of_tie]
    tpr = np.r_[0.0, tp / max(same.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~same).sum(), 1)]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(scores, same)
    return float(np.trapezoid(tpr, fpr))


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false-accept and false-reject rates meet on the ROC.

    Linear interpolation between the two ROC points that straddle FAR = FRR.
    """
    fpr, tpr, thresholds = roc_curve(scores, same)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.nonzero(diff >= 0)[0][0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    lower = thresholds[i - 1] if np.isfinite(thresholds[i - 1]) else thresholds[i]
    return float(eer), float(lower + w * (thresholds[i] - lower))


def verification_pairs(embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 4_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Scores and same-identity flags of all pairs i < j, or of a uniform sample of them.

    Returns (scores, same, sampled). Sampling pairs uniformly keeps the ROC unbiased.
    """
    labels = np.asarray(labels)
    n = len(labels)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        sampled = False
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = rng.integers(0, n - 1, size=max_pairs)
        j = j + (j >= i)  # uniform over j != i
        sampled = True
    scores = np.einsum("ij,ij->i", embeddings[i], embeddings[j])
    return scores, labels[i] == labels[j], sampled
