"""Evaluators: assemble metric functions into a protocol's numbers.

An evaluator factory returns a callable ``(queries, gallery) -> list[metric]``; a None
gallery means leave-one-out over ``queries`` (petkit.embeddings.query_gallery decides). Each metric is a dict
``{name, value, protocol, ...sample sizes}`` so metrics.json says what every number means.
"""

from __future__ import annotations

import numpy as np

from petkit.embeddings import EmbeddingSet
from petkit.errors import PetkitError
from petkit.evaluation.metrics import equal_error_rate, retrieval_metrics, roc_auc, verification_pairs
from petkit.registry import EVALUATORS


@EVALUATORS.register("retrieval")
def retrieval(ks: tuple[int, ...] | list[int] = (1, 3, 5, 10)):
    """Recall@K, Precision@K, top-K identity accuracy, mAP, mAP@R, R-precision."""
    ks = tuple(int(k) for k in ks)

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        targets = queries if gallery is None else gallery
        mode = "leave-one-out" if gallery is None else "query-gallery"
        groups = (queries.columns["sequences"], targets.columns["sequences"]) if queries.has("sequences") else (None, None)
        result = retrieval_metrics(
            queries.vectors, queries.identities, targets.vectors, targets.identities, ks,
            leave_one_out=mode == "leave-one-out", query_groups=groups[0], gallery_groups=groups[1],
        )
        if result.queries == 0:
            raise PetkitError(
                "no query has a same-identity image in the gallery: retrieval cannot be scored",
                "evaluate a split where identities have at least two images, or give a matching gallery",
            )
        sizes = {"queries": result.queries, "queries_without_match": result.queries_without_match, "gallery": result.gallery}
        protocol = f"retrieval/{mode}" + ("/sequence-excluded" if groups[0] is not None else "")
        return [{"name": name, "value": value, "protocol": protocol, **sizes} for name, value in result.metrics.items()]

    return evaluate


@EVALUATORS.register("verification")
def verification(max_pairs: int = 4_000_000, seed: int = 0):
    """ROC-AUC and EER (+ its threshold) over same/different-identity pairs."""

    def evaluate(probe: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        data = probe if gallery is None else _concat(probe, gallery)
        scores, same, sampled = verification_pairs(data.vectors, data.identities, max_pairs, seed)
        positives, negatives = int(same.sum()), int((~same).sum())
        if positives == 0 or negatives == 0:
            raise PetkitError(
                f"verification needs same- and different-identity pairs (found {positives} and {negatives})",
                "evaluate a set with several identities, some with two or more images",
            )
        eer, threshold = equal_error_rate(scores, same)
        protocol = "verification/" + ("sampled-pairs" if sampled else "all-pairs")
        sizes = {"pairs": len(scores), "positive_pairs": positives, "negative_pairs": negatives}
        return [
            {"name": "roc_auc", "value": roc_auc(scores, same), "protocol": protocol, **sizes},
            {"name": "eer", "value": eer, "protocol": protocol, **sizes},
            {"name": "eer_threshold", "value": threshold, "protocol": protocol, "unit": "cosine similarity", **sizes},
        ]

    return evaluate


def _concat(a: EmbeddingSet, b: EmbeddingSet) -> EmbeddingSet:
    columns = {k: np.concatenate([a.columns[k], b.columns[k]]) for k in a.columns}
    return EmbeddingSet(np.concatenate([a.vectors, b.vectors]), columns, a.fingerprint, a.model, a.root)
