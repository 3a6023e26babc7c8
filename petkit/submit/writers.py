"""``petkit submit``: query embeddings vs a gallery -> a challenge submission CSV.

Writers are registered under ``petkit.submissions``. ``topk`` (the default) is the cat-face
challenge's form: one row per query image, ``image,pred`` with the k best identities
separated by spaces, best first. See docs/formats.md.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.io import write_text
from petkit.registry import SUBMISSIONS
from petkit.retrieval.index import GalleryIndex

ID_FORMS = ("name", "stem", "path")


@dataclass
class Submission:
    rows: list[list[str]]
    header: list[str]

    def text(self, delimiter: str = ",") -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()


@SUBMISSIONS.register("topk")
def topk_writer(k: int = 3, image_column: str = "image", pred_column: str = "pred", separator: str = " "):
    """image,pred with the k best distinct identities per query (cat-face top-3 challenge)."""

    def write(query_ids: list[str], queries: np.ndarray, index: GalleryIndex) -> Submission:
        names, _ = index.top_identities(queries, k)
        return Submission([[qid, separator.join(row)] for qid, row in zip(query_ids, names)], [image_column, pred_column])

    return write


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


def submit(
    queries_path: str,
    gallery_path: str | None = None,
    query_split: str | None = None,
    gallery_split: str | None = None,
    writer: str = "topk",
    writer_args: dict | None = None,
    id_from: str = "name",
) -> Submission:
    """Rank gallery identities for every query and format them with a registered writer."""
    probe = emb.load(queries_path)
    if gallery_path is not None:
        queries, targets = probe.where("splits", query_split), emb.load(gallery_path).where("splits", gallery_split)
    else:
        queries, targets = emb.query_gallery(probe, query_split, gallery_split)
        if targets is None:
            raise PetkitError(
                "cannot tell queries from gallery: one embeddings file, the same split for both and no query/gallery roles",
                "pass --gallery gallery.npz, or --query-split test --gallery-split train, or prepare with --gallery-per-identity",
            )
    emb.require_same_model(("queries", queries), ("gallery", targets))
    if not len(queries):
        raise PetkitError("no query images selected", "check --query-split or the role column")
    index = GalleryIndex(targets.vectors, targets.identities)
    build = SUBMISSIONS.build({"name": writer, "args": writer_args or {}})
    return build(query_ids(queries.paths, id_from), queries.vectors, index)


def write_submission(path: str, submission: Submission) -> None:
    write_text(path, submission.text())
