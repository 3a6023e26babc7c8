"""Evaluators: assemble metric functions into a protocol's numbers.

An evaluator factory returns a callable ``(probe, gallery) -> list[metric]``: ``probe`` is
the embedding set being evaluated, ``gallery`` a separate one or None. Each metric is a dict
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

    def evaluate(probe: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        queries, targets, mode = _query_gallery(probe, gallery)
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


def _query_gallery(probe: EmbeddingSet, gallery: EmbeddingSet | None) -> tuple[EmbeddingSet, EmbeddingSet, str]:
    if gallery is not None:
        return probe, gallery, "query-gallery"
    roles = probe.columns["roles"]
    if probe.has("roles"):
        queries, targets = probe.subset(roles == "query"), probe.subset(roles == "gallery")
        if len(queries) and len(targets):
            return queries, targets, "query-gallery"
    return probe, probe, "leave-one-out"


def _concat(a: EmbeddingSet, b: EmbeddingSet) -> EmbeddingSet:
    columns = {k: np.concatenate([a.columns[k], b.columns[k]]) for k in a.columns}
    return EmbeddingSet(np.concatenate([a.vectors, b.vectors]), columns, a.fingerprint, a.model, a.root)
