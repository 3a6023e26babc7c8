"""Build, update and query a saved gallery index (the API behind 'petkit index' and 'petkit search')."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.retrieval.calibration import resolve_threshold
from petkit.retrieval.index import GalleryIndex

RECALL_SAMPLE = 1000  # gallery vectors used as queries to compare an approximate index with exact search


def build_index(embeddings_path: str | Path, split: str | None = None, kind: str = "flat", params: dict | None = None,
                calibration: str | Path | None = None) -> tuple[GalleryIndex, float]:
    """(index, its recall@10 against exact search) from the labelled real images of an embeddings file."""
    data = emb.load(embeddings_path).where("splits", split).labelled_real()
    if not len(data):
        raise PetkitError(f"no labelled images{f' with split {split!r}' if split else ''} in {embeddings_path}", "check --split")
    threshold, source = None, ""
    if calibration is not None:
        threshold, source = resolve_threshold(None, calibration, data.fingerprint, data.model)
    index = GalleryIndex(data.vectors, data.identities, kind, np.array(data.absolute_paths()), data.fingerprint, data.model, params,
                         {"threshold": threshold, "source": source} if threshold is not None else None)
    return index, index.recall_against_exact(_sample(index.vectors), 10)


def add_to_index(index: GalleryIndex, embeddings_path: str | Path, split: str | None = None) -> int:
    data = emb.load(embeddings_path).where("splits", split).labelled_real()
    if not len(data):
        raise PetkitError(f"no labelled images to add in {embeddings_path}", "embed labelled <identity>/<image> folders")
    index.add(data.vectors, data.identities, np.array(data.absolute_paths()), data.fingerprint)
    return len(data)


def _sample(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) <= RECALL_SAMPLE:
        return vectors
    return vectors[np.random.default_rng(0).choice(len(vectors), RECALL_SAMPLE, replace=False)]


@dataclass
class Match:
    image: str
    rank: int
    identity: str
    score: float
    accepted: bool  # score >= the threshold (always True without one)


def search(index: GalleryIndex, images: str | Path, model: str | Path | None = None, top_k: int = 5,
           threshold: float | None = None, calibration: str | Path | None = None, device: str = "auto",
           progress=None, on_total=None) -> tuple[list[Match], float | None, str]:
    """The top-k identities for every image under ``images``; (matches, threshold, where it came from)."""
    model = model or index.model
    if not model:
        raise PetkitError("the index does not record its model", "pass --model best.pt (or model.onnx)")
    queries = emb.embed(model, images, device=device, progress=progress, on_total=on_total, fmt="images")
    index.require_model(queries.fingerprint, f"the images embedded with {model}")
    if threshold is None and calibration is None and index.calibration:
        threshold, source = index.calibration["threshold"], f"the index ({index.calibration['source']})"
    else:
        threshold, source = resolve_threshold(threshold, calibration, queries.fingerprint, str(model))
    names, scores = index.top_identities(queries.vectors, top_k)
    matches = []
    for path, row_names, row_scores in zip(queries.paths, names, scores):
        for rank, (name, score) in enumerate(zip(row_names, row_scores), start=1):
            matches.append(Match(str(path), rank, name, score, threshold is None or score >= threshold))
    return matches, threshold, source
