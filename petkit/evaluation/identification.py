"""Identification evaluators: open-set (DIR@FPIR), closed-set classification, few-shot, clustering."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from petkit.embeddings import EmbeddingSet, concat_sets
from petkit.errors import PetkitError
from petkit.evaluation import metrics as M
from petkit.evaluation.evaluators import labelled_real
from petkit.limits import OPEN_FRACTION, NonNegativeInt, Range
from petkit.registry import EVALUATORS


@EVALUATORS.register("open_set")
def open_set(fpirs: Annotated[tuple[float, ...] | list[float], OPEN_FRACTION] = (0.001, 0.01, 0.1),
             unknown_fraction: Annotated[float, OPEN_FRACTION] = 0.5, enroll: Annotated[int, Range(1, 100_000)] = 1,
             seed: NonNegativeInt = 0, bootstrap: Annotated[int, Range(0, 1_000_000)] = 1000):
    """DIR@FPIR of probes against an enrolled gallery, some probes of individuals never enrolled.

    With a gallery (roles, --gallery, --gallery-split) probes whose identity it lacks are the
    unknowns. Without one, the identities are split: ``1 - unknown_fraction`` of them enrol
    ``enroll`` images each (the rest of theirs are known probes), the others are unknown probes.
    """

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        queries, gallery = labelled_real(queries), labelled_real(gallery)
        mode = "enrolled-gallery"
        if gallery is None:
            queries, gallery = enrolment_split(queries, unknown_fraction, enroll, seed)
            mode = f"split-identities (enroll {enroll}, unknown {unknown_fraction:g})"
        scores = open_set_scores(queries, gallery)
        known = scores["known"]
        if known.all() or not known.any():
            raise PetkitError(
                f"open-set needs known and unknown probes (found {int(known.sum())} known, {int((~known).sum())} unknown)",
                "give a gallery lacking some probe identities, or evaluate without a gallery so petkit splits the identities",
            )
        sizes = {"known_probes": int(known.sum()), "unknown_probes": int((~known).sum()),
                 "gallery": len(gallery), "gallery_identities": len(set(gallery.identities.tolist()))}
        protocol = f"open_set/{mode}"
        rank1 = scores["correct"][known]
        out = [{"name": "rank1_identification", "value": float(rank1.mean()), "protocol": protocol, **sizes,
                "note": "known probes only, no threshold (closed-set)"}]
        if bootstrap:
            out[0]["ci95"] = list(M.bootstrap_interval(rank1, queries.identities[known], bootstrap, seed=seed))
        for result in M.dir_at_fpir(scores["top"], known, scores["correct"], tuple(fpirs)):
            entry = {"name": f"dir@fpir={result.fpir:g}", "value": result.dir, "protocol": protocol, "threshold": result.threshold,
                     "achieved_fpir": result.achieved_fpir, **sizes}
            if result.fpir * sizes["unknown_probes"] < 1:
                entry["note"] = f"only {sizes['unknown_probes']} unknown probes: FPIR {result.fpir:g} cannot be resolved"
            out.append(entry)
        return out

    return evaluate


def enrolment_split(data: EmbeddingSet, unknown_fraction: float, enroll: int, seed: int) -> tuple[EmbeddingSet, EmbeddingSet]:
    """(probes, gallery): a seeded split of the identities into enrolled and never-seen ones."""
    rng = np.random.default_rng(seed)
    names = np.array(sorted(set(data.identities.tolist())))
    rng.shuffle(names)
    unknown = set(names[: int(round(unknown_fraction * len(names)))].tolist())
    in_gallery = np.zeros(len(data), dtype=bool)
    for name in names:
        if name in unknown:
            continue
        members = np.nonzero(data.identities == name)[0]
        in_gallery[rng.permutation(members)[:enroll]] = True
    return data.subset(~in_gallery), data.subset(in_gallery)


def open_set_scores(probes: EmbeddingSet, gallery: EmbeddingSet) -> dict[str, np.ndarray]:
    """Each probe's best identity, its score, whether the probe is enrolled and whether the best is right."""
    names, scores = M.identity_scores(probes.vectors, gallery.vectors, gallery.identities)
    best = scores.argmax(axis=1)
    predicted = names[best]
    return {"top": scores[np.arange(len(best)), best], "predicted": predicted,
            "known": np.isin(probes.identities, names), "correct": predicted == probes.identities}


@EVALUATORS.register("classification")
def classification(rule: str = "nearest", ks: Annotated[tuple[int, ...] | list[int], Range(1, 100_000)] = (1, 5),
                   bootstrap: Annotated[int, Range(0, 1_000_000)] = 1000, seed: NonNegativeInt = 0):
    """Closed-set top-1 and top-K accuracy of test images against a labelled gallery (e.g. the train split).

    ``nearest`` scores each identity by its most similar image, ``centroid`` by its mean embedding.
    """
    if rule not in ("nearest", "centroid"):
        raise PetkitError(f"unknown classification rule '{rule}'", "use nearest or centroid")

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        queries, gallery = labelled_real(queries), labelled_real(gallery)
        if gallery is None:
            raise PetkitError("classification scores test images against a labelled gallery",
                              "pass --gallery-split train (or --gallery train.npz)")
        names, scores = class_scores(queries.vectors, gallery, rule)
        enrolled = np.isin(queries.identities, names)
        if not enrolled.any():
            raise PetkitError("no query identity is in the gallery: closed-set classification cannot be scored",
                              "evaluate test images of identities the gallery holds (a --split-by image split)")
        truth = queries.identities[enrolled]
        ranking = np.argsort(-scores[enrolled], axis=1, kind="stable")
        sizes = {"queries": int(enrolled.sum()), "queries_not_enrolled": int((~enrolled).sum()), "classes": len(names)}
        out = []
        for k in ks:
            hits = (names[ranking[:, :k]] == truth[:, None]).any(axis=1)
            name = "accuracy" if k == 1 else f"top{k}_accuracy"
            metric = {"name": name, "value": float(hits.mean()), "protocol": f"classification/{rule}", **sizes}
            if k == 1:
                metric["value"] = M.closed_set_accuracy(names[ranking[:, 0]], truth)
            if bootstrap:
                metric["ci95"] = list(M.bootstrap_interval(hits.astype(float), truth, bootstrap, seed=seed))
            out.append(metric)
        return out

    return evaluate


def class_scores(vectors: np.ndarray, gallery: EmbeddingSet, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(class names, scores [Q, classes]) under the nearest-image or the class-centroid rule."""
    if rule == "nearest":
        return M.identity_scores(vectors, gallery.vectors, gallery.identities)
    names, index = np.unique(gallery.identities, return_inverse=True)
    centroids = np.zeros((len(names), gallery.vectors.shape[1]), dtype=np.float64)
    np.add.at(centroids, index, gallery.vectors)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return names, (vectors @ centroids.T.astype(np.float32))


@EVALUATORS.register("few_shot")
def few_shot(n_way: Annotated[int, Range(2, 100_000)] = 5, k_shot: Annotated[tuple[int, ...] | list[int] | int, Range(1, 10_000)] = (1, 5),
             n_query: Annotated[int, Range(1, 10_000)] = 1, episodes: Annotated[int, Range(1, 10_000_000)] = 600, seed: NonNegativeInt = 0):
    """N-way K-shot accuracy over random episodes of the (held-out) identities; mean and 95 % interval."""
    shots = (k_shot,) if isinstance(k_shot, int) else tuple(k_shot)

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        data = labelled_real(queries if gallery is None else concat_sets(queries, gallery))
        counts = np.unique(data.identities, return_counts=True)[1]
        out = []
        for k in shots:
            eligible = int((counts >= k + n_query).sum())
            if eligible < n_way:
                continue
            result = M.few_shot_accuracy(data.vectors, data.identities, n_way, k, n_query, episodes, seed)
            out.append({"name": f"{n_way}way{k}shot_accuracy", "value": result.mean, "ci95": [result.mean - result.ci95, result.mean + result.ci95],
                        "protocol": "few_shot/prototype", "episodes": episodes, "queries_per_class": n_query, "eligible_identities": eligible})
        if not out:
            need = min(shots) + n_query
            raise PetkitError(
                f"{n_way}-way {min(shots)}-shot needs {n_way} identities with at least {need} images; found {int((counts >= need).sum())}",
                "lower few_shot.n_way, k_shot or n_query (--option few_shot.n_way=3), or evaluate a larger split",
            )
        return out

    return evaluate


@EVALUATORS.register("clustering")
def clustering(seed: NonNegativeInt = 0):
    """NMI and AMI of k-means clusters (k = number of identities) against the identities."""

    def evaluate(queries: EmbeddingSet, gallery: EmbeddingSet | None) -> list[dict]:
        data = labelled_real(queries if gallery is None else concat_sets(queries, gallery))
        nmi, ami = M.clustering_scores(data.vectors, data.identities, seed)
        sizes = {"images": len(data), "identities": len(set(data.identities.tolist()))}
        return [{"name": "NMI", "value": nmi, "protocol": "clustering/k-means", **sizes},
                {"name": "AMI", "value": ami, "protocol": "clustering/k-means", **sizes}]

    return evaluate
