"""Data checks from the embeddings: likely mislabels, near-duplicates, one animal under two names.

A trained (or pretrained) embedding knows which photos look alike far better than a person paging
through folders. Three checks, each a pure function of the unit vectors and their labels:

- **mislabel**: a photo whose own identity is not among the ``k`` identities nearest to it (each
  identity scored by its best-matching photo, the photo itself left out); ``score`` is the margin
  by which the nearest other identity beats its own, so the surest cases come first. Photos that
  are the only one of their identity cannot be judged and are counted, not flagged.
- **split_leak** / **identity_duplicate**: photo pairs at cosine similarity >= ``duplicate_threshold``
  that sit in different splits (the test score is inflated by a copy the model trained on) or carry
  different identities (the same photo filed twice). A pair may be both.
- **same_animal**: identity pairs whose photos match each other better than they match themselves:
  ``score`` = the smaller of the two shares "photos of A whose best match is in B" and "of B in A",
  flagged from ``same_animal_share``.

:func:`audit` runs all three on an :class:`~petkit.embeddings.EmbeddingSet` and returns
:class:`Finding` rows; :func:`write_csv` writes ``audit.csv``.
"""

from __future__ import annotations

import csv
import io as _io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.io import refuse_overwrite, write_text
from petkit.limits import Range, checked

KINDS = ("mislabel", "split_leak", "identity_duplicate", "same_animal")
CSV_COLUMNS = ("kind", "score", "path_a", "identity_a", "split_a", "path_b", "identity_b", "split_b", "detail")
BLOCK = 2048  # rows of the similarity matrix held at once (2048 x 100k float32 = 0.8 GB at most)

# Defaults measured on dogfacenet-dev with planted errors (benchmarks/bench_audit.py, see docs/audit.md)
MISLABEL_K = 1
MISLABEL_MARGIN = 0.15
DUPLICATE_THRESHOLD = 0.95
SAME_ANIMAL_SHARE = 0.3
MIN_VOTES = 1  # photos of each identity that must prefer the other (2 cost half the recall on 3-photo halves)


@dataclass
class Finding:
    kind: str
    score: float
    a: int  # row in the embeddings
    b: int = -1  # the other row (a pair), or -1
    detail: str = ""


@dataclass
class AuditResult:
    findings: list[Finding]
    counts: dict[str, int]
    settings: dict[str, float]
    unjudged: int = 0  # photos alone in their identity (no mislabel verdict possible)
    images: int = 0
    identities: int = 0
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return names, codes


@dataclass
class _Neighbours:
    """Per photo: its best similarity to its own identity (the photo itself left out; -inf when alone),
    the nearest other identity, its best similarity, and the k-th nearest other identity's."""

    names: np.ndarray
    codes: np.ndarray
    counts: np.ndarray
    own: np.ndarray
    nearest: np.ndarray
    nearest_score: np.ndarray
    kth_score: np.ndarray


def _identity_neighbours(x: np.ndarray, identities: np.ndarray, k: int) -> _Neighbours:
    names, codes = _codes(identities)
    counts = np.bincount(codes, minlength=len(names))
    order = np.argsort(codes, kind="stable")  # photos grouped by identity
    starts = np.searchsorted(codes[order], np.arange(len(names)))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))  # where each photo sits in the grouped order
    grouped = x[order]
    k = max(1, min(k, len(names) - 1))
    n = len(x)
    own, nearest = np.full(n, -np.inf, np.float32), np.zeros(n, np.int64)
    nearest_score, kth = np.full(n, -np.inf, np.float32), np.full(n, -np.inf, np.float32)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        rows = np.arange(stop - start)
        sims = x[start:stop] @ grouped.T
        sims[rows, position[start:stop]] = -np.inf  # a photo never matches itself
        per_identity = np.maximum.reduceat(sims, starts, axis=1)  # each identity's best photo: [block, identities]
        own_codes = codes[start:stop]
        own[start:stop] = per_identity[rows, own_codes]
        if len(names) < 2:
            continue
        per_identity[rows, own_codes] = -np.inf
        top = np.argpartition(-per_identity, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(per_identity, top, axis=1)
        kth[start:stop] = top_scores.min(axis=1)
        best = top_scores.argmax(axis=1)
        nearest[start:stop] = top[rows, best]
        nearest_score[start:stop] = top_scores[rows, best]
    return _Neighbours(names, codes, counts, own, nearest, nearest_score, kth)


def find_mislabels(vectors: np.ndarray, identities: np.ndarray, k: int = MISLABEL_K, margin: float = MISLABEL_MARGIN) -> tuple[list[Finding], int]:
    """Photos whose identity is not among their ``k`` nearest identities by at least ``margin``; (findings, photos not judged).

    ``b`` of each finding is the best-matching photo of the nearest other identity, so a reviewer sees the pair.
    """
    x = _unit(vectors)
    nb = _identity_neighbours(x, identities, k)
    judged = nb.counts[nb.codes] > 1
    flagged = np.nonzero(judged & np.isfinite(nb.kth_score) & (nb.kth_score - nb.own >= margin))[0]
    findings: list[Finding] = []
    for i in flagged:
        photos = np.nonzero(nb.codes == nb.nearest[i])[0]
        partner = int(photos[np.argmax(x[photos] @ x[i])])
        findings.append(Finding("mislabel", float(nb.nearest_score[i] - nb.own[i]), int(i), partner,
                                f"nearest identity {nb.names[nb.nearest[i]]} ({nb.nearest_score[i]:.3f}) vs its own ({nb.own[i]:.3f})"))
    findings.sort(key=lambda f: -f.score)
    return findings, int((~judged).sum())


def find_duplicates(vectors: np.ndarray, identities: np.ndarray, splits: np.ndarray,
                    threshold: float = DUPLICATE_THRESHOLD) -> list[Finding]:
    """Pairs at similarity >= ``threshold`` across splits (split_leak) or identities (identity_duplicate)."""
    x = _unit(vectors)
    identities, splits = np.asarray(identities).astype(str), np.asarray(splits).astype(str)
    findings: list[Finding] = []
    for start in range(0, len(x), BLOCK):
        sims = x[start:start + BLOCK] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        rows = rows + start
        keep = cols > rows  # each pair once, never a photo with itself
        for i, j in zip(rows[keep], cols[keep]):
            score = float(sims[i - start, j])
            if splits[i] != splits[j]:
                findings.append(Finding("split_leak", score, int(i), int(j), f"{splits[i] or '-'} / {splits[j] or '-'}"))
            if identities[i] != identities[j]:
                findings.append(Finding("identity_duplicate", score, int(i), int(j), f"{identities[i]} / {identities[j]}"))
    findings.sort(key=lambda f: -f.score)
    return findings


def find_same_animal(vectors: np.ndarray, identities: np.ndarray, min_share: float = SAME_ANIMAL_SHARE) -> list[Finding]:
    """Identity pairs (A, B) whose photos match each other better than they match themselves: the share
    of A's photos whose best match lies in B (rather than in A), and of B's in A; the pair is flagged
    when the smaller of the two shares is at least ``min_share``. One mislabelled photo of A filed under
    B makes A's photos prefer B (their best match is that photo) but only one photo of B prefer A: a
    share of 1 / |B|, below the default 0.3 for identities of 4 photos or more."""
    x = _unit(vectors)
    nb = _identity_neighbours(x, identities, 1)
    # a photo alone in its identity prefers any other: it has no vote
    prefers = np.nonzero((nb.counts[nb.codes] > 1) & np.isfinite(nb.nearest_score) & (nb.nearest_score > nb.own))[0]
    votes: dict[tuple[int, int], int] = {}
    for i in prefers:
        key = (int(nb.codes[i]), int(nb.nearest[i]))
        votes[key] = votes.get(key, 0) + 1
    findings: list[Finding] = []
    for (a, b), ab in votes.items():
        if a > b or votes.get((b, a), 0) < MIN_VOTES or ab < MIN_VOTES:
            continue  # each pair once, and only mutual preferences
        share = min(ab / nb.counts[a], votes[(b, a)] / nb.counts[b])
        if share >= min_share:
            rows_a, rows_b = np.nonzero(nb.codes == a)[0], np.nonzero(nb.codes == b)[0]
            sims = x[rows_a] @ x[rows_b].T
            i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
            findings.append(Finding("same_animal", float(share), int(rows_a[i]), int(rows_b[j]),
                                    f"{ab} of {nb.names[a]}'s {nb.counts[a]} photos match {nb.names[b]} best, "
                                    f"{votes[(b, a)]} of {nb.names[b]}'s {nb.counts[b]} match {nb.names[a]} best"))
    findings.sort(key=lambda f: -f.score)
    return findings


@checked
def audit(data: emb.EmbeddingSet, mislabel_k: Annotated[int, Range(1, 1000)] = MISLABEL_K,
          mislabel_margin: Annotated[float, Range(-2, 2)] = MISLABEL_MARGIN,
          duplicate_threshold: Annotated[float, Range(-1, 1)] = DUPLICATE_THRESHOLD,
          same_animal_share: Annotated[float, Range(0, 1, low_open=True)] = SAME_ANIMAL_SHARE) -> AuditResult:
    """All checks on the labelled real photos of ``data`` (near-duplicates: on every photo)."""
    if len(data) < 2:
        raise PetkitError(f"an audit needs at least 2 photos, the embeddings hold {len(data)}", "embed the whole dataset")
    labelled = np.nonzero((data.identities != "") & (data.columns["is_fake"] != "1"))[0]
    notes = []
    findings: list[Finding] = []
    unjudged = 0
    if len(labelled) >= 2:
        vectors, names = data.vectors[labelled], data.identities[labelled]
        mislabels, unjudged = find_mislabels(vectors, names, mislabel_k, mislabel_margin)
        same = find_same_animal(vectors, names, same_animal_share)
        for finding in mislabels + same:
            finding.a, finding.b = int(labelled[finding.a]), int(labelled[finding.b]) if finding.b >= 0 else -1
        findings += mislabels + same
    else:
        notes.append("fewer than 2 labelled photos: only near-duplicates were checked")
    if not data.has("splits"):
        notes.append("the embeddings carry no splits: no split_leak check (embed a manifest from 'petkit prepare')")
    findings += find_duplicates(data.vectors, data.identities, data.columns["splits"], duplicate_threshold)
    counts = {kind: 0 for kind in KINDS}
    for finding in findings:
        counts[finding.kind] += 1
    findings.sort(key=lambda f: (KINDS.index(f.kind), -f.score))
    settings = {"mislabel_k": mislabel_k, "mislabel_margin": mislabel_margin, "duplicate_threshold": duplicate_threshold,
                "same_animal_share": same_animal_share}
    return AuditResult(findings, counts, settings, unjudged, len(data), len(np.unique(data.identities[labelled])), notes)


def rows(result: AuditResult, data: emb.EmbeddingSet) -> list[dict[str, str]]:
    """audit.csv's rows (paths as the embeddings store them)."""
    paths, identities, splits = data.paths, data.identities, data.columns["splits"]
    out = []
    for f in result.findings:
        row = {"kind": f.kind, "score": f"{f.score:.4f}", "path_a": paths[f.a], "identity_a": identities[f.a], "split_a": splits[f.a],
               "path_b": paths[f.b] if f.b >= 0 else "", "identity_b": identities[f.b] if f.b >= 0 else "",
               "split_b": splits[f.b] if f.b >= 0 else "", "detail": f.detail}
        out.append(row)
    return out


def write_csv(path: str | Path, result: AuditResult, data: emb.EmbeddingSet) -> None:
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(result, data))
    write_text(path, buffer.getvalue())


def audit_file(embeddings_path: str | Path, out: str | Path | None = None, overwrite: bool = False, **settings) -> tuple[AuditResult, emb.EmbeddingSet]:
    """``petkit audit``: audit ``embeddings_path`` and write audit.csv to ``out`` (refusing to replace a file unasked)."""
    target = Path(out) if out is not None else None
    if target is not None:
        refuse_overwrite([target], overwrite, inputs=(embeddings_path,))
    data = emb.load(embeddings_path)
    result = audit(data, **settings)
    if target is not None:
        write_csv(target, result, data)
    return result, data
