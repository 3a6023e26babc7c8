"""Build, update and query a saved gallery index (the API behind 'petkit index' and 'petkit search')."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from petkit import embeddings as emb
from petkit.engine.embedder import embed
from petkit.errors import PetkitError
from petkit.io import refuse_overwrite, write_text
from petkit.limits import SIMILARITY, Range, checked
from petkit.retrieval.calibration import resolve_threshold
from petkit.retrieval.index import GalleryIndex

RECALL_SAMPLE = 1000  # gallery vectors used as queries to compare an approximate index with exact search


def build_index(embeddings_path: str | Path, split: str | None = None, kind: str = "flat", params: dict | None = None,
                calibration: str | Path | None = None, out: str | Path | None = None, overwrite: bool = False) -> tuple[GalleryIndex, float]:
    """(index, its recall@10 against exact search) from the labelled real images of an embeddings file; saved to ``out``."""
    if out is not None:
        refuse_overwrite([Path(out)], overwrite, inputs=(embeddings_path, calibration))
    data = emb.load(embeddings_path).where("splits", split).labelled_real()
    if not len(data):
        raise PetkitError(f"no labelled images{f' with split {split!r}' if split else ''} in {embeddings_path}", "check --split")
    threshold, source = None, ""
    if calibration is not None:
        threshold, source = resolve_threshold(None, calibration, data.fingerprint, data.model)
    index = GalleryIndex(data.vectors, data.identities, kind, np.array(data.absolute_paths()), data.fingerprint, data.model, params,
                         {"threshold": threshold, "source": source} if threshold is not None else None)
    recall = index.recall_against_exact(_sample(index.vectors), 10)
    if out is not None:
        index.save(out)
    return index, recall


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


@dataclass
class SearchResult:
    matches: list[Match]
    threshold: float | None
    source: str  # where the threshold came from
    skipped: list[tuple[str, str]]  # (image, why) for images that could not be decoded


@checked
def search(index: GalleryIndex, images: str | Path, model: str | Path | None = None, top_k: Annotated[int, Range(1, 100_000)] = 5,
           threshold: Annotated[float, SIMILARITY] | None = None, calibration: str | Path | None = None, device: str = "auto",
           progress=None, on_total=None, out: str | Path | None = None, overwrite: bool = False) -> SearchResult:
    """The top-k identities for every readable image under ``images`` (an unreadable one is skipped and
    listed in the result, the rest are answered). With ``out`` the matches are also written as CSV
    (image,rank,identity,score,accepted).
    """
    if out is not None:
        refuse_overwrite([Path(out)], overwrite, inputs=(images, model, calibration))
    model = model or index.model
    if not model:
        raise PetkitError("the index does not record its model", "pass --model best.pt (or model.onnx)")
    skipped: list[tuple[str, str]] = []
    queries = embed(model, images, device=device, progress=progress, on_total=on_total, fmt="images", skipped=skipped)
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
    if out is not None:
        buffer = io.StringIO()  # the csv module quotes paths that hold commas
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "rank", "identity", "score", "accepted"])
        writer.writerows([m.image, m.rank, m.identity, f"{m.score:.6f}", int(m.accepted)] for m in matches)
        write_text(out, buffer.getvalue())
    return SearchResult(matches, threshold, source, skipped)
