"""Evaluators: assemble metric functions into a protocol's numbers.

An evaluator factory takes the protocol's options and returns a callable
``(queries, gallery) -> list[metric]``; a None gallery means leave-one-out over ``queries``
(petkit.embeddings.query_gallery decides). Each metric is a dict ``{name, value, protocol,
...sample sizes}``, plus ``ci95`` (a bootstrap interval), ``category`` (a per-category
breakdown) or ``note`` (a caveat) where they apply, so metrics.json says what every number means.
Unlabelled images (a challenge's test queries) are never scored; fake images only by real_fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from petkit.embeddings import EmbeddingSet, concat_sets, pair_vectors
from petkit.errors import PetkitError
from petkit.evaluation import metrics as M
from petkit.evaluation.rerank import rerank as rerank_scores
from petkit.limits import OPEN_FRACTION, NonNegativeInt, Range
from petkit.registry import EVALUATORS

HEADLINE = ("recall@1", "mAP@R")  # broken down per category


def labelled_real(data: EmbeddingSet | None) -> EmbeddingSet | None:
    if data is None:
        return None
    return data.labelled_real()


@EVALUATORS.register("retrieval")
def retrieval(ks: Annotated[tuple[int, ...] | list[int], Range(1, 100_000)] = (1, 3, 5, 10), rerank: str = "none", rerank_args: dict | None = None,
              bootstrap: Annotated[int, Range(0, 1_000_000)] = 1000, seed: NonNegativeInt = 0):
    """Recall@K (CMC), Precision@K, top-K identity accuracy, mAP, mAP@R, R-precision, with 95 % intervals.

    Intervals resample identities; ``rerank``: k_reciprocal or query_expansion (petkit.evaluation.rerank).
    """
    ks = tuple(int(k) for k in ks)

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        queries, gallery = labelled_real(queries), labelled_real(gallery)
        targets = queries if gallery is None else gallery
        mode = "leave-one-out" if gallery is None else "query-gallery"
        groups = (queries.columns["sequences"], targets.columns["sequences"]) if queries.has("sequences") else (None, None)
        similarity = rerank_scores(rerank, queries.vectors, targets.vectors, gallery is None, **(rerank_args or {}))
        result = M.retrieval_metrics(
            queries.vectors, queries.identities, targets.vectors, targets.identities, ks,
            leave_one_out=mode == "leave-one-out", query_groups=groups[0], gallery_groups=groups[1], similarity=similarity,
        )
        if result.queries == 0:
            raise PetkitError(
                "no query has a same-identity image in the gallery: retrieval cannot be scored",
                "evaluate a split where identities have at least two images, or give a matching gallery",
            )
        sizes = {"queries": result.queries, "queries_without_match": result.queries_without_match, "gallery": result.gallery}
        protocol = f"retrieval/{mode}" + ("/sequence-excluded" if groups[0] is not None else "") + ("" if rerank == "none" else f"/{rerank}")
        owners = queries.identities[result.counted]
        gallery_identities = len(set(targets.identities.tolist()))
        out = []
        for name, values in result.per_query.items():
            metric = {"name": name, "value": result.metrics[name], "protocol": protocol, **sizes}
            if bootstrap:
                metric["ci95"] = list(M.bootstrap_interval(values, owners, bootstrap, seed=seed))
            note = _trivial_note(name, gallery_identities)
            if note:
                metric["note"] = note
            out.append(metric)
        out.extend(_per_category(result, queries, protocol))
        return out

    return evaluate


def _trivial_note(name: str, gallery_identities: int) -> str:
    """Top-K identity accuracy says nothing when the gallery holds K identities or fewer."""
    if name.startswith("top") and name.endswith("_accuracy") and int(name[3:-len("_accuracy")]) >= gallery_identities:
        return f"trivially 1: the gallery has only {gallery_identities} identities"
    return ""


def _per_category(result: M.RetrievalResult, queries: EmbeddingSet, protocol: str) -> list[dict]:
    if not queries.has("categories"):
        return []
    categories = queries.columns["categories"][result.counted]
    out = []
    for category in sorted(set(categories.tolist())):
        mask = categories == category
        for name in HEADLINE:
            out.append({"name": name, "value": float(result.per_query[name][mask].mean()), "protocol": protocol,
                        "category": category, "queries": int(mask.sum())})
    return out


@EVALUATORS.register("verification")
def verification(max_pairs: Annotated[int, Range(1, 10**10)] = 4_000_000, seed: NonNegativeInt = 0, pairs: str | None = None,
                 fars: Annotated[tuple[float, ...] | list[float], OPEN_FRACTION] = (1e-4, 1e-3, 1e-2, 1e-1),
                 threshold: Annotated[float, Range(-4, 4)] | None = None, bootstrap: Annotated[int, Range(0, 1_000_000)] = 200,
                 distance_threshold: Annotated[float, Range(0, 2)] | None = None):
    """ROC-AUC, EER, TAR@FAR and accuracy at fixed and best thresholds, over all, sampled or listed pairs.

    ``pairs``: a pairs CSV with a 'same' column; otherwise every same/different pair (a uniform
    sample above ``max_pairs``). ``threshold``: a cosine similarity; ``distance_threshold``: a
    Euclidean distance between the L2-normalised embeddings (a pair matches when closer), e.g. the
    distortion use case's 0.5, scored as cosine ``1 - d^2 / 2`` (``|a - b|^2 = 2 - 2 cos``).
    """


    def evaluate(probe: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        if pairs:
            scores, same = _pairs_csv_scores(probe if gallery is None else concat_sets(probe, gallery), pairs)
            protocol = f"verification/pairs-csv ({Path(pairs).name})"
        else:
            data = labelled_real(probe if gallery is None else concat_sets(probe, gallery))
            pairs_ = verification_pair_scores(data, max_pairs, seed)
            protocol = "verification/" + ("sampled-pairs" if pairs_.sampled else "all-pairs")
            return (verification_metrics(pairs_.scores, pairs_.same, protocol, fars, threshold, bootstrap, seed, pairs_.owners,
                                         distance_threshold) + _verification_by_category(data, max_pairs, seed))
        return verification_metrics(scores, same, protocol, fars, threshold, bootstrap, seed, distance=distance_threshold)

    return evaluate


@dataclass
class PairScores:
    """Cosine similarities of image pairs and whether each pair shows one individual."""

    scores: np.ndarray
    same: np.ndarray
    owners: tuple[np.ndarray, np.ndarray]  # identity code of each pair's first and second image
    sampled: bool


def verification_pair_scores(data: EmbeddingSet, max_pairs: int = 4_000_000, seed: int = 0) -> PairScores:
    """Every same/different pair of ``data`` (a uniform sample above ``max_pairs``): what verification scores and the report plots."""
    i, j, sampled = M.pair_indices(len(data), max_pairs, seed)
    owners = identity_codes(data)
    return PairScores(np.einsum("ij,ij->i", data.vectors[i], data.vectors[j]), owners[i] == owners[j], (owners[i], owners[j]), sampled)


def real_fake_pair_scores(data: EmbeddingSet, max_pairs: int = 4_000_000, seed: int = 0) -> dict[str, PairScores]:
    """``{"real": genuine vs real impostors, "fake": genuine vs (real X, fake of X)}``: the pairs of eer_real and eer_fake."""
    data = data.subset(data.identities != "")
    fake = data.columns["is_fake"] == "1"
    if not fake.any():
        raise PetkitError("the embeddings have no fake images (is_fake = 1)",
                          "put forgeries in <identity>/fake/ and re-run prepare and embed, or add an is_fake column")
    i, j, sampled = M.pair_indices(len(data), max_pairs, seed)
    ids, codes = data.identities, identity_codes(data)
    same_id = ids[i] == ids[j]
    both_real = ~fake[i] & ~fake[j]
    scores = np.einsum("ij,ij->i", data.vectors[i], data.vectors[j])
    genuine = same_id & both_real
    out = {}
    for name, negatives in (("real", ~same_id & both_real), ("fake", same_id & (fake[i] ^ fake[j]))):
        keep = genuine | negatives
        out[name] = PairScores(scores[keep], genuine[keep], (codes[i][keep], codes[j][keep]), sampled)
    return out


def identity_codes(data: EmbeddingSet) -> np.ndarray:
    return np.unique(data.identities, return_inverse=True)[1]


def distance_to_cosine(distance: float) -> float:
    """The cosine similarity of two unit vectors at this Euclidean distance (|a - b|^2 = 2 - 2 cos)."""
    return 1.0 - distance * distance / 2.0


def verification_metrics(scores, same, protocol, fars, threshold, bootstrap, seed, owners=None, distance=None) -> list[dict]:
    """``owners``: (identity code of each pair's first image, of its second): intervals then resample identities."""
    positives, negatives = int(same.sum()), int((~same).sum())
    if positives == 0 or negatives == 0:
        raise PetkitError(
            f"verification needs same- and different-identity pairs (found {positives} and {negatives})",
            "evaluate a set with several identities, some with two or more images",
        )
    sizes = {"pairs": len(scores), "positive_pairs": positives, "negative_pairs": negatives}
    eer, eer_threshold = M.equal_error_rate(scores, same)
    best, best_threshold = M.best_accuracy(scores, same)
    intervals = _pair_intervals(scores, same, owners, bootstrap, seed) if bootstrap else {}

    def metric(name, value, **extra):
        entry = {"name": name, "value": value, "protocol": protocol, **extra, **sizes}
        if name in intervals:
            entry["ci95"] = intervals[name]
        return entry

    out = [
        metric("roc_auc", M.roc_auc(scores, same)),
        metric("eer", eer),
        metric("eer_threshold", eer_threshold, unit="cosine similarity"),
        metric("best_accuracy", best, threshold=best_threshold, note="threshold chosen on these pairs (an upper bound)"),
    ]
    for far, tar, far_threshold in M.tar_at_far(scores, same, tuple(fars)):
        entry = metric(f"tar@far={far:g}", tar, threshold=far_threshold)
        if far * negatives < 1:
            entry["note"] = f"only {negatives} negative pairs: FAR {far:g} cannot be resolved"
        out.append(entry)
    if threshold is not None:
        out.append(metric("accuracy@threshold", M.accuracy_at_threshold(scores, same, float(threshold)), threshold=float(threshold)))
    if distance is not None:
        cosine = distance_to_cosine(float(distance))
        out.append(metric("accuracy@distance", M.accuracy_at_threshold(scores, same, cosine), distance=float(distance), threshold=cosine,
                          note="a pair matches when its embeddings are no farther apart than the distance"))
    return out


def _verification_by_category(data: EmbeddingSet, max_pairs: int, seed: int) -> list[dict]:
    """ROC-AUC and EER over the pairs within each category (e.g. two dogs of one breed: the hard negatives)."""
    if not data.has("categories"):
        return []
    out = []
    for category in sorted(set(data.columns["categories"].tolist()) - {""}):
        members = data.where("categories", category)
        scores, same, sampled = M.verification_pairs(members.vectors, members.identities, max_pairs, seed)
        if same.all() or not same.any():
            continue  # one identity, or no repeated one: nothing to verify within this category
        sizes = {"category": category, "pairs": len(scores), "positive_pairs": int(same.sum()), "negative_pairs": int((~same).sum())}
        protocol = "verification/" + ("sampled-pairs" if sampled else "all-pairs")
        out += [{"name": "roc_auc", "value": M.roc_auc(scores, same), "protocol": protocol, **sizes},
                {"name": "eer", "value": M.equal_error_rate(scores, same)[0], "protocol": protocol, **sizes}]
    return out


def _pair_intervals(scores, same, owners, resamples: int, seed: int, cap: int = 200_000) -> dict[str, list[float]]:
    """Bootstrap intervals of AUC and EER on at most ``cap`` pairs (a uniform subsample).

    With ``owners`` whole identities are resampled: an identity drawn k times counts its own
    pairs k times and its pairs with an identity drawn m times k * m times (pairs between two
    copies of one identity are left out); without them, pairs are resampled one by one.
    """
    rng = np.random.default_rng(seed)
    if len(scores) > cap:
        keep = rng.choice(len(scores), cap, replace=False)
        scores, same = scores[keep], same[keep]
        owners = (owners[0][keep], owners[1][keep]) if owners is not None else None
    order = np.argsort(-scores, kind="stable")  # sorted once: each resample only reweights
    scores, same = scores[order], same[order]
    if owners is not None:
        a, b = owners[0][order], owners[1][order]
        n_identities = int(max(a.max(), b.max())) + 1
    values = []
    for _ in range(resamples):
        if owners is None:
            weights = np.bincount(rng.integers(0, len(scores), len(scores)), minlength=len(scores))
        else:
            drawn = np.bincount(rng.integers(0, n_identities, n_identities), minlength=n_identities)
            weights = np.where(a == b, drawn[a], drawn[a] * drawn[b])
        counted = weights > 0
        if not (same & counted).any() or not (~same & counted).any():
            continue
        values.append((M.roc_auc(scores, same, weights), M.equal_error_rate(scores, same, weights)[0]))
    if not values:
        return {}
    low, high = np.percentile(np.array(values), [2.5, 97.5], axis=0)
    return {"roc_auc": [float(low[0]), float(high[0])], "eer": [float(low[1]), float(high[1])]}


def _pairs_csv_scores(data: EmbeddingSet, pairs_path: str) -> tuple[np.ndarray, np.ndarray]:
    from petkit.data.pairs import read_pairs

    pairs = read_pairs(pairs_path)
    if pairs.same is None:
        raise PetkitError(f"{pairs_path} has no 'same' column: its pairs cannot be scored",
                          "use it with 'petkit submit --format pair_scores' instead, or add same=1/0")
    a, b = pair_vectors(data, pairs)
    return np.einsum("ij,ij->i", a, b), np.array(pairs.same)


@EVALUATORS.register("real_fake")
def real_fake(max_pairs: Annotated[int, Range(1, 10**10)] = 4_000_000, seed: NonNegativeInt = 0, bootstrap: Annotated[int, Range(0, 1_000_000)] = 200):
    """eer_real: genuine pairs vs real impostors; eer_fake: genuine pairs vs (real X, fake of X) pairs."""

    def evaluate(probe: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        data = probe if gallery is None else concat_sets(probe, gallery)
        out = []
        for name, pairs_ in real_fake_pair_scores(data, max_pairs, seed).items():
            for metric in verification_metrics(pairs_.scores, pairs_.same, f"real_fake/{name}-negatives", (), None, bootstrap, seed,
                                               pairs_.owners):
                if metric["name"] in ("eer", "roc_auc", "eer_threshold"):
                    metric["name"] = f"{metric['name']}_{name}"
                    out.append(metric)
        return out

    return evaluate
