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
    per_query: dict[str, np.ndarray]  # each metric's value per counted query (for intervals and breakdowns)
    counted: np.ndarray  # bool [n_queries]: which queries per_query describes


def retrieval_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: tuple[int, ...] = (1, 3, 5, 10),
    leave_one_out: bool = False,
    query_groups: np.ndarray | None = None,
    gallery_groups: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> RetrievalResult:
    """Ranking metrics of every query against the gallery.

    ``leave_one_out``: query and gallery are the same set; each image is left out of its own
    ranking. ``*_groups`` (e.g. the manifest's ``sequence``): a gallery image in the query's
    own non-empty group is left out of its ranking. ``similarity`` [Q, G]: rank by these
    scores (e.g. re-ranked) instead of ``query @ gallery.T``.
    """
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    parts: dict[str, list[np.ndarray]] = {}
    counted = []
    for start in range(0, len(query_labels), BLOCK):
        stop = min(start + BLOCK, len(query_labels))
        scores = similarity[start:stop] if similarity is not None else query[start:stop] @ gallery.T
        excluded = _exclusions(start, stop, len(gallery_labels), leave_one_out, query_groups, gallery_groups)
        keep, block = _rank_block(scores, excluded, query_labels[start:stop], gallery_labels, ks)
        counted.append(keep)
        for key, values in block.items():
            parts.setdefault(key, []).append(values)
    per_query = {key: np.concatenate(values) for key, values in parts.items()}
    mask = np.concatenate(counted) if counted else np.zeros(0, dtype=bool)
    n = int(mask.sum())
    metrics = {key: (float(values.mean()) if n else float("nan")) for key, values in per_query.items()}
    return RetrievalResult(metrics, n, len(query_labels) - n, len(gallery_labels), per_query, mask)


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


def _rank_block(scores, excluded, q_labels, g_labels, ks) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(queries with a relevant item, {metric: value per such query})."""
    scores = np.where(excluded, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_scores = np.take_along_axis(scores, order, axis=1)
    present = np.isfinite(ranked_scores)
    relevant = (g_labels[order] == q_labels[:, None]) & present
    n_relevant = relevant.sum(axis=1)
    keep = n_relevant > 0
    relevant, order, n_relevant = relevant[keep], order[keep], n_relevant[keep]
    out: dict[str, np.ndarray] = {}
    positions = np.arange(1, relevant.shape[1] + 1)
    hits_so_far = np.cumsum(relevant, axis=1)
    precision_at = hits_so_far / positions
    last = max(relevant.shape[1], 1)
    for k in ks:
        out[f"recall@{k}"] = relevant[:, :k].any(axis=1).astype(np.float64)
        out[f"precision@{k}"] = hits_so_far[:, min(k, last) - 1] / k if relevant.shape[1] else np.zeros(0)
        out[f"top{k}_accuracy"] = _identity_topk(order, relevant, g_labels, k).astype(np.float64)
    out["mAP"] = (precision_at * relevant).sum(axis=1) / np.maximum(n_relevant, 1)
    within_r = positions[None, :] <= n_relevant[:, None]
    out["mAP@R"] = (precision_at * relevant * within_r).sum(axis=1) / np.maximum(n_relevant, 1)
    out["R-precision"] = (relevant & within_r).sum(axis=1) / np.maximum(n_relevant, 1)
    return keep, out


def _identity_topk(order: np.ndarray, relevant: np.ndarray, g_labels: np.ndarray, k: int) -> np.ndarray:
    """Is the true identity among the first k distinct identities of each ranking?

    Vectorised: a ranked item opens a new identity when no earlier item of its row has that
    label; the true identity is within the first k distinct ones when its first relevant item
    is preceded by fewer than k other first occurrences.
    """
    if order.size == 0:
        return np.zeros(len(order), dtype=bool)
    _, codes = np.unique(g_labels, return_inverse=True)
    ranked = codes[order]  # [Q, G] identity code at each rank
    rows = np.arange(len(order))[:, None]
    first_rank = np.full((len(order), codes.max() + 1), order.shape[1], dtype=np.int64)
    np.minimum.at(first_rank, (np.broadcast_to(rows, ranked.shape), ranked), np.broadcast_to(np.arange(order.shape[1]), ranked.shape))
    opens = first_rank[rows, ranked] == np.arange(order.shape[1])[None, :]  # this rank is its identity's first
    has_hit = relevant.any(axis=1)
    hit_rank = np.where(has_hit, relevant.argmax(axis=1), 0)
    distinct_before = np.cumsum(opens, axis=1) - opens  # first occurrences strictly before each rank
    return has_hit & (distinct_before[np.arange(len(order)), hit_rank] < k)


# ---------------------------------------------------------------------------------------
# verification: same / different pairs


def roc_curve(scores: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (accept when score >= t).

    ``weights``: how many times each pair counts (a bootstrap resample), 1 when None.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    scores, same, weights = scores[order], same[order], weights[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(weights * same)[last_of_tie]
    fp = np.cumsum(weights * ~same)[last_of_tie]
    tpr = np.r_[0.0, tp / max(tp[-1], 1e-12)]
    fpr = np.r_[0.0, fp / max(fp[-1], 1e-12)]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None) -> float:
    fpr, tpr, _ = roc_curve(scores, same, weights)
    return float(np.trapezoid(tpr, fpr))


def equal_error_rate(scores: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(EER, threshold): where the false-accept and false-reject rates meet on the ROC.

    Linear interpolation between the two ROC points that straddle FAR = FRR.
    """
    fpr, tpr, thresholds = roc_curve(scores, same, weights)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.nonzero(diff >= 0)[0][0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    lower = thresholds[i - 1] if np.isfinite(thresholds[i - 1]) else thresholds[i]
    return float(eer), float(lower + w * (thresholds[i] - lower))


def pair_indices(n: int, max_pairs: int = 4_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """(i, j, sampled): all pairs i < j, or ``max_pairs`` drawn uniformly over i != j."""
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j, False
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    j = rng.integers(0, n - 1, size=max_pairs)
    return i, j + (j >= i), True  # j + (j >= i) is uniform over j != i


def verification_pairs(embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 4_000_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Scores and same-identity flags of all pairs i < j, or of a uniform sample of them.

    Returns (scores, same, sampled). Sampling pairs uniformly keeps the ROC unbiased.
    """
    labels = np.asarray(labels)
    i, j, sampled = pair_indices(len(labels), max_pairs, seed)
    scores = np.einsum("ij,ij->i", embeddings[i], embeddings[j])
    return scores, labels[i] == labels[j], sampled


def tar_at_far(scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...]) -> list[tuple[float, float, float]]:
    """(FAR target, TAR, threshold) with TAR = 1 - FNMR at the loosest threshold whose FAR <= target."""
    fpr, tpr, thresholds = roc_curve(scores, same)
    out = []
    for far in fars:
        i = int(np.searchsorted(fpr, far, side="right")) - 1  # fpr rises along the curve
        out.append((float(far), float(tpr[i]), float(thresholds[i])))
    return out


def accuracy_at_threshold(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs decided right when 'same' means score >= threshold."""
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, dtype=bool)))


def balanced_accuracy_at_threshold(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Mean of the same-pair and different-pair accuracies at ``threshold`` (what a 50/50 pair set measures;
    NaN without pairs of both kinds)."""
    same = np.asarray(same, dtype=bool)
    accept = np.asarray(scores) >= threshold
    if same.all() or not same.any():
        return float("nan")
    return float((accept[same].mean() + (~accept[~same]).mean()) / 2.0)


def best_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best single threshold over all distinct scores (an oracle upper bound)."""
    fpr, tpr, thresholds = roc_curve(scores, same)
    same = np.asarray(same, dtype=bool)
    positives, negatives = same.sum(), (~same).sum()
    correct = tpr * positives + (1.0 - fpr) * negatives
    i = int(np.argmax(correct))
    return float(correct[i] / len(same)), float(thresholds[i])


def clustering_scores(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(NMI, AMI) of k-means clusters (k = number of identities) against the identities."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors)
    return float(normalized_mutual_info_score(labels, clusters)), float(adjusted_mutual_info_score(labels, clusters))


def bootstrap_interval(values: np.ndarray, groups: np.ndarray | None = None, resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    With ``groups`` (e.g. each query's identity) whole groups are resampled, because images of
    one individual are not independent; the interval is then wider and honest.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, len(values), size=(resamples, len(values)))
        means = values[draws].mean(axis=1)
    else:
        _, group_index = np.unique(np.asarray(groups), return_inverse=True)
        sums = np.bincount(group_index, weights=values)
        counts = np.bincount(group_index).astype(np.float64)
        draws = rng.integers(0, len(sums), size=(resamples, len(sums)))
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------
# classification, few-shot, open-set identification


def closed_set_accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(true)))


def identity_scores(query: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(identities [I], scores [Q, I]): each query's best similarity to each gallery identity."""
    identities, index = np.unique(np.asarray(gallery_labels), return_inverse=True)
    order = np.argsort(index, kind="stable")  # gallery grouped by identity
    starts = np.searchsorted(index[order], np.arange(len(identities)))
    grouped = gallery[order]
    out = np.empty((len(query), len(identities)), dtype=np.float32)
    for start in range(0, len(query), BLOCK):
        out[start:start + BLOCK] = np.maximum.reduceat(query[start:start + BLOCK] @ grouped.T, starts, axis=1)
    return identities, out


@dataclass
class EpisodeResult:
    accuracies: np.ndarray  # per episode
    mean: float
    ci95: float  # half-width of the normal 95 % interval of the mean


def sample_episodes(labels: np.ndarray, n_way: int, k_shot: int, n_query: int, episodes: int, seed: int = 0):
    """Yield (support indices [n_way * k_shot], query indices [n_way * n_query], class of each)."""
    from petkit.errors import PetkitError

    labels = np.asarray(labels)
    names, counts = np.unique(labels, return_counts=True)
    eligible = names[counts >= k_shot + n_query]
    if len(eligible) < n_way:
        raise PetkitError(
            f"{n_way}-way {k_shot}-shot needs {n_way} identities with at least {k_shot + n_query} images; found {len(eligible)}",
            "lower n_way, k_shot or n_query (protocol options), or evaluate a larger split",
        )
    rng = np.random.default_rng(seed)
    members = {name: np.nonzero(labels == name)[0] for name in eligible}
    for _ in range(episodes):
        chosen = rng.choice(eligible, size=n_way, replace=False)
        support, queries, classes = [], [], []
        for c, name in enumerate(chosen):
            picked = rng.choice(members[name], size=k_shot + n_query, replace=False)
            support.extend(picked[:k_shot])
            queries.extend(picked[k_shot:])
            classes.append(np.full(n_query, c))
        yield np.array(support), np.array(queries), np.concatenate(classes)


def few_shot_accuracy(vectors: np.ndarray, labels: np.ndarray, n_way: int = 5, k_shot: int = 1, n_query: int = 1,
                      episodes: int = 600, seed: int = 0) -> EpisodeResult:
    """N-way K-shot accuracy: each query goes to the nearest class prototype (mean of its K shots)."""
    accuracies = []
    for support, queries, classes in sample_episodes(labels, n_way, k_shot, n_query, episodes, seed):
        prototypes = vectors[support].reshape(n_way, k_shot, -1).mean(axis=1)
        distances = ((vectors[queries][:, None, :] - prototypes[None]) ** 2).sum(axis=2)
        accuracies.append(np.mean(distances.argmin(axis=1) == classes))
    accuracies = np.array(accuracies)
    half = 1.96 * accuracies.std(ddof=1) / np.sqrt(len(accuracies)) if len(accuracies) > 1 else float("nan")
    return EpisodeResult(accuracies, float(accuracies.mean()), float(half))


def calibrate_threshold(impostor_scores: np.ndarray, target_rate: float) -> float:
    """The loosest threshold t (accept when score >= t) at which at most ``target_rate`` of impostors pass.

    t is the next representable number above the first impostor score that must be rejected, in
    the scores' own precision (float32 embeddings give float32 scores, compared in float32).
    """
    scores = np.asarray(impostor_scores)
    dtype = scores.dtype if scores.dtype in (np.float32, np.float64) else np.float64
    ranked = np.sort(scores.astype(dtype))[::-1]
    allowed = int(np.floor(target_rate * len(ranked) + 1e-9))
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(np.nextafter(ranked[allowed], dtype.type(np.inf)))


def acceptance_rate(scores: np.ndarray, threshold: float) -> float:
    scores = np.asarray(scores)
    return float(np.mean(scores >= threshold)) if len(scores) else float("nan")


@dataclass
class OpenSetResult:
    fpir: float  # target
    threshold: float
    dir: float  # detection and identification rate of known probes
    achieved_fpir: float  # on the unknown probes it was set on


def dir_at_fpir(top_scores: np.ndarray, known: np.ndarray, correct: np.ndarray, fpirs: tuple[float, ...]) -> list[OpenSetResult]:
    """Open-set identification (ISO/IEC 19795-1, NIST FRVT 1:N).

    ``top_scores``: each probe's best gallery score; ``known``: the probe's identity is enrolled;
    ``correct``: the best identity is the probe's own. For each FPIR target the threshold is
    set on the unknown probes; DIR is the share of known probes identified correctly *and* above it.
    """
    top_scores, known, correct = np.asarray(top_scores), np.asarray(known, bool), np.asarray(correct, bool)
    unknown_scores = top_scores[~known]
    out = []
    for fpir in fpirs:
        threshold = calibrate_threshold(unknown_scores, fpir)
        hits = correct[known] & (top_scores[known] >= threshold)
        out.append(OpenSetResult(float(fpir), threshold, float(hits.mean()) if known.any() else float("nan"),
                                 acceptance_rate(unknown_scores, threshold)))
    return out
