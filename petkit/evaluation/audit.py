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
- **same_animal**: identity pairs whose photos match each other about as well as, or better than,
  each matches itself: ``score`` = mean cross similarity minus the larger of the two mean
  within-identity similarities (all pairwise means, exact from the per-identity vector sums);
  flagged when ``score >= -same_animal_margin``.

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
MISLABEL_MARGIN = 0.05
DUPLICATE_THRESHOLD = 0.97
SAME_ANIMAL_MARGIN = 0.02


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


def find_mislabels(vectors: np.ndarray, identities: np.ndarray, k: int = MISLABEL_K, margin: float = MISLABEL_MARGIN) -> tuple[list[Finding], int]:
    """Photos whose identity is not among their ``k`` nearest identities by at least ``margin``; (findings, photos not judged).

    ``b`` of each finding is the best-matching photo of the nearest other identity, so a reviewer sees the pair.
    """
    x = _unit(vectors)
    names, codes = _codes(identities)
    counts = np.bincount(codes, minlength=len(names))
    order = np.argsort(codes, kind="stable")  # photos grouped by identity
    starts = np.searchsorted(codes[order], np.arange(len(names)))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))  # where each photo sits in the grouped order
    grouped = x[order]
    k = min(k, len(names) - 1) if len(names) > 1 else 1
    findings: list[Finding] = []
    for start in range(0, len(x), BLOCK):
        stop = min(start + BLOCK, len(x))
        rows = np.arange(stop - start)
        sims = x[start:stop] @ grouped.T
        sims[rows, position[start:stop]] = -np.inf  # a photo never matches itself
        per_identity = np.maximum.reduceat(sims, starts, axis=1)  # each identity's best photo: [block, identities]
        own_codes = codes[start:stop]
        own = per_identity[rows, own_codes].copy()
        per_identity[rows, own_codes] = -np.inf
        if len(names) < 2:
            break
        top = np.argpartition(-per_identity, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(per_identity, top, axis=1)
        kth = top_scores.min(axis=1)  # the k-th nearest other identity
        nearest = top[rows, top_scores.argmax(axis=1)]
        for i in np.nonzero((counts[own_codes] > 1) & (kth - own >= margin))[0]:
            best = float(per_identity[i, nearest[i]])
            photos = order[starts[nearest[i]]:starts[nearest[i]] + counts[nearest[i]]]
            findings.append(Finding("mislabel", best - float(own[i]), start + int(i), int(photos[np.argmax(x[photos] @ x[start + i])]),
                                    f"nearest identity {names[nearest[i]]} ({best:.3f}) vs its own ({own[i]:.3f})"))
    findings.sort(key=lambda f: -f.score)
    return findings, int((counts[codes] <= 1).sum())


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


def find_same_animal(vectors: np.ndarray, identities: np.ndarray, margin: float = SAME_ANIMAL_MARGIN,
                     candidates: int = 5) -> list[Finding]:
    """Identity pairs whose cross similarity reaches their within-identity similarity (minus ``margin``).

    Mean pairwise cosines come exactly from the per-identity sums S: cross(A, B) = S_A.S_B / (n_A n_B),
    within(A) = (|S_A|^2 - n_A) / (n_A (n_A - 1)); only each identity's ``candidates`` nearest by
    cross similarity are compared, so the cost is identities^2 x dimensions, blocked.
    """
    x = _unit(vectors)
    names, codes = _codes(identities)
    n = np.bincount(codes, minlength=len(names)).astype(np.float64)
    sums = np.zeros((len(names), x.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, x)
    within = np.full(len(names), np.nan)
    several = n > 1
    within[several] = ((sums[several] ** 2).sum(axis=1) - n[several]) / (n[several] * (n[several] - 1))
    means = (sums / n[:, None]).astype(np.float32)
    pairs: dict[tuple[int, int], float] = {}
    take = min(candidates, len(names) - 1)
    if take < 1:
        return []
    for start in range(0, len(names), BLOCK):
        cross = means[start:start + BLOCK] @ means.T
        cross[np.arange(len(cross)), np.arange(start, start + len(cross))] = -np.inf
        top = np.argpartition(-cross, take - 1, axis=1)[:, :take]
        for offset, row in enumerate(top):
            a = start + offset
            for b in row:
                key = (min(a, int(b)), max(a, int(b)))
                pairs[key] = float(cross[offset, b])
    findings: list[Finding] = []
    for (a, b), value in pairs.items():
        own = np.nanmax([within[a], within[b]]) if several[a] or several[b] else np.nan
        if np.isnan(own):
            continue  # two single photos: a near-duplicate check's matter
        score = value - own
        if score >= -margin:
            rows_a, rows_b = np.nonzero(codes == a)[0], np.nonzero(codes == b)[0]
            sims = x[rows_a] @ x[rows_b].T
            i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
            findings.append(Finding("same_animal", score, int(rows_a[i]), int(rows_b[j]),
                                    f"{names[a]} ({int(n[a])} photos, within {within[a]:.3f}) / {names[b]} ({int(n[b])} photos, "
                                    f"within {within[b]:.3f}): cross {value:.3f}"))
    findings.sort(key=lambda f: -f.score)
    return findings


@checked
def audit(data: emb.EmbeddingSet, mislabel_k: Annotated[int, Range(1, 1000)] = MISLABEL_K,
          mislabel_margin: Annotated[float, Range(-2, 2)] = MISLABEL_MARGIN,
          duplicate_threshold: Annotated[float, Range(-1, 1)] = DUPLICATE_THRESHOLD,
          same_animal_margin: Annotated[float, Range(-2, 2)] = SAME_ANIMAL_MARGIN) -> AuditResult:
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
        same = find_same_animal(vectors, names, same_animal_margin)
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
                "same_animal_margin": same_animal_margin}
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
