"""``petkit submit``: embeddings -> a challenge submission CSV.

Writers are registered under ``petkit.submissions`` (docs/formats.md shows a file of each):

- ``topk``: ``image,pred`` with the k best identities separated by spaces (cat-face top-3);
- ``classification``: ``id,label``, the best identity (closed-set);
- ``open_set``: ``id,label``, the best identity, or ``n000000`` when its score is below the
  calibrated threshold (the probe matches nobody enrolled);
- ``pair_scores``: ``pair_id,similarity`` for every pair of a pairs CSV.

Every writer takes ``columns`` (the header) and the CSV ``delimiter``; every query image (or
pair) appears exactly once, which is checked before anything is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

import numpy as np

from petkit import embeddings as emb
from petkit.data.manifest import UNKNOWN_IDENTITY
from petkit.data.pairs import Pairs, read_pairs
from petkit.errors import PetkitError
from petkit.interfaces import SubmissionWriter
from petkit.io import refuse_overwrite, write_text
from petkit.limits import SIMILARITY, Range, checked
from petkit.registry import SUBMISSIONS
from petkit.retrieval.calibration import resolve_threshold
from petkit.retrieval.index import GalleryIndex

ID_FORMS = ("name", "stem", "path")


@dataclass
class Submission:
    rows: list[list[str]]
    header: list[str]
    delimiter: str = ","
    summary: str = ""

    def text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.delimiter, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()


@dataclass
class Request:
    """What a writer answers: query ids and vectors against an index, or the pairs of a pairs CSV."""

    ids: list[str]
    vectors: np.ndarray | None = None
    index: GalleryIndex | None = None
    threshold: float | None = None
    pair_scores: np.ndarray | None = None


def _header(columns, default: tuple[str, str]) -> list[str]:
    header = list(columns) if columns else list(default)
    if len(header) != 2:
        raise PetkitError(f"this submission has 2 columns; got --columns {','.join(header)}", f"for example --columns {','.join(default)}")
    return header


class TopKWriter(SubmissionWriter):
    def __init__(self, k: int, columns, separator: str, delimiter: str):
        if k < 1:
            raise PetkitError(f"topk needs k >= 1, got {k}", "for example --top-k 3")
        self.k, self.header, self.separator, self.delimiter = k, _header(columns, ("image", "pred")), separator, delimiter

    def __call__(self, request: Request) -> Submission:
        names, _ = request.index.top_identities(request.vectors, self.k)
        rows = [[qid, self.separator.join(row)] for qid, row in zip(request.ids, names)]
        return Submission(rows, self.header, self.delimiter, f"top-{self.k} identities each")


class ClassificationWriter(SubmissionWriter):
    def __init__(self, columns, delimiter: str):
        self.header, self.delimiter = _header(columns, ("id", "label")), delimiter

    def __call__(self, request: Request) -> Submission:
        names, _ = request.index.top_identities(request.vectors, 1)
        return Submission([[qid, row[0]] for qid, row in zip(request.ids, names)], self.header, self.delimiter, "best identity each")


class OpenSetWriter(SubmissionWriter):
    def __init__(self, columns, delimiter: str, unknown_label: str):
        self.header, self.delimiter, self.unknown_label = _header(columns, ("id", "label")), delimiter, unknown_label

    def __call__(self, request: Request) -> Submission:
        if request.threshold is None:
            raise PetkitError("an open-set submission needs a similarity threshold",
                              "run 'petkit calibrate' (calibration.json beside the model is found), or pass --calibration or --threshold")
        names, scores = request.index.top_identities(request.vectors, 1)
        rows = [[qid, row[0] if score[0] >= request.threshold else self.unknown_label]
                for qid, row, score in zip(request.ids, names, scores)]
        unknown = sum(1 for row in rows if row[1] == self.unknown_label)
        return Submission(rows, self.header, self.delimiter, f"{unknown} answered '{self.unknown_label}' (threshold {request.threshold:.4f})")


class PairScoresWriter(SubmissionWriter):
    needs_pairs = True  # submit() asks for --pairs before it looks for queries

    def __init__(self, columns, delimiter: str, digits: int):
        self.header, self.delimiter, self.digits = _header(columns, ("pair_id", "similarity")), delimiter, digits

    def __call__(self, request: Request) -> Submission:
        rows = [[pid, f"{score:.{self.digits}f}"] for pid, score in zip(request.ids, request.pair_scores)]
        return Submission(rows, self.header, self.delimiter, "one cosine similarity per pair")


@SUBMISSIONS.register("topk")
def topk_writer(k: Annotated[int, Range(1, 100_000)] = 3, columns: list[str] | None = None, separator: str = " ", delimiter: str = ",") -> TopKWriter:
    """image,pred with the k best distinct identities per query (cat-face top-3 challenge)."""
    return TopKWriter(k, columns, separator, delimiter)


@SUBMISSIONS.register("classification")
def classification_writer(columns: list[str] | None = None, delimiter: str = ",") -> ClassificationWriter:
    """id,label: the best identity of each image (closed-set classification)."""
    return ClassificationWriter(columns, delimiter)


@SUBMISSIONS.register("open_set")
def open_set_writer(columns: list[str] | None = None, delimiter: str = ",", unknown_label: str = UNKNOWN_IDENTITY) -> OpenSetWriter:
    """id,label: the best identity if its score reaches the threshold, else the unknown label."""
    return OpenSetWriter(columns, delimiter, unknown_label)


@SUBMISSIONS.register("pair_scores")
def pair_scores_writer(columns: list[str] | None = None, delimiter: str = ",", digits: Annotated[int, Range(1, 17)] = 6) -> PairScoresWriter:
    """pair_id,similarity (cosine, -1..1) for every pair of a pairs CSV."""
    return PairScoresWriter(columns, delimiter, digits)


def query_ids(paths: np.ndarray, form: str) -> list[str]:
    if form not in ID_FORMS:
        raise PetkitError(f"unknown id form '{form}'", f"use one of {', '.join(ID_FORMS)}")
    ids = [str(PurePosixPath(p).name if form == "name" else PurePosixPath(p).stem if form == "stem" else p) for p in paths]
    seen: dict[str, str] = {}
    for identifier, path in zip(ids, paths):
        if identifier in seen:
            raise PetkitError(
                f"two query images would share the submission id '{identifier}' ({seen[identifier]} and {path})",
                "use --id-from path (or stem) so every test image appears exactly once",
            )
        seen[identifier] = str(path)
    return ids


@checked
def submit(
    queries_path: str,
    gallery_path: str | None = None,
    query_split: str | None = None,
    gallery_split: str | None = None,
    writer: str = "topk",
    writer_args: dict | None = None,
    id_from: str = "name",
    threshold: Annotated[float, SIMILARITY] | None = None,
    calibration: str | None = None,
    pairs: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> Submission:
    """Answer every query (or pair) with a registered writer; the result is checked complete.

    With ``pairs`` the writer is asked about the pairs (``Request.pair_scores``); otherwise about
    the query images against the gallery, with the threshold from ``threshold``, ``calibration``
    or calibration.json beside the model (None when there is none).
    """
    if out is not None:
        refuse_overwrite([Path(out)], overwrite, inputs=(queries_path, gallery_path, pairs, calibration))
    build = SUBMISSIONS.build({"name": writer, "args": writer_args or {}})
    if build.needs_pairs and not pairs:
        raise PetkitError(f"the {writer} submission answers the pairs of a pairs file", "pass --pairs pairs.csv (the file you embedded)")
    if pairs:
        request = _pairs_request(queries_path, pairs)
    else:
        request = _query_request(queries_path, gallery_path, query_split, gallery_split, id_from)
        request.threshold, _ = resolve_threshold(threshold, calibration, request.index.fingerprint, request.index.model)
    submission = build(request)
    if not isinstance(submission, Submission):
        raise PetkitError(f"submission writer '{writer}' returned {type(submission).__name__}, not a Submission",
                          "a writer returns petkit.submit.writers.Submission(rows, header, delimiter, summary)")
    check_complete(submission, request.ids)
    if out is not None:
        write_submission(str(out), submission)
    return submission


def _query_request(queries_path, gallery_path, query_split, gallery_split, id_from) -> Request:
    queries, targets = emb.select(queries_path, query_split, gallery_path, gallery_split)
    if targets is None:
        raise PetkitError(
            "cannot tell queries from gallery: one embeddings file, the same split for both and no query/gallery roles",
            "pass --gallery gallery.npz, or --query-split test --gallery-split train, or prepare with --gallery-per-identity",
        )
    if not len(queries):
        raise PetkitError("no query images selected", "check --query-split or the role column")
    targets = targets.labelled_real()
    index = GalleryIndex(targets.vectors, targets.identities, fingerprint=targets.fingerprint, model=targets.model)
    return Request(query_ids(queries.paths, id_from), queries.vectors, index)


def _pairs_request(embeddings_path: str, pairs_path: str) -> Request:
    pairs: Pairs = read_pairs(pairs_path)
    a, b = emb.pair_vectors(emb.load(embeddings_path), pairs)
    return Request(pairs.ids, pair_scores=np.einsum("ij,ij->i", a, b))


def check_complete(submission: Submission, ids: list[str]) -> None:
    """Every id exactly once, in order, before the file is written."""
    answered = [row[0] for row in submission.rows]
    if answered != list(ids):
        missing = sorted(set(ids) - set(answered))
        raise PetkitError(f"the submission does not answer every query exactly once ({len(answered)} rows for {len(ids)} queries"
                          + (f", e.g. {missing[0]} missing" if missing else "") + ")", "this is a writer bug: report it")


def write_submission(path: str, submission: Submission) -> None:
    write_text(path, submission.text())
