"""embeddings.npz: vectors plus everything needed to score them, and the set operations on them.

``petkit.engine.embedder.embed`` writes the file; this module reads it, and owns the one rule
that picks queries and gallery from it (:func:`select`), used by evaluate, calibrate and submit.

Arrays (all of length N unless noted): ``vectors`` float32 [N, D] L2-normalised; ``paths``,
``identities``, ``splits``, ``roles``, ``sequences``, ``is_fake``, ``categories`` (strings,
empty where the manifest has no value); scalars ``format``, ``version``, ``fingerprint``
(of the model that made them), ``model`` (its path), ``root`` (folder the paths start from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petkit.data import manifest as mf
from petkit.errors import PetkitError
from petkit.io import atomic_path, load_versioned_npz

FORMAT = "petkit.embeddings"
VERSION = 1
COLUMNS = {  # array name -> manifest column
    "paths": mf.PATH, "identities": mf.IDENTITY, "splits": mf.SPLIT, "roles": mf.ROLE,
    "sequences": mf.SEQUENCE, "is_fake": mf.IS_FAKE, "categories": mf.CATEGORY,
}


@dataclass
class EmbeddingSet:
    vectors: np.ndarray
    columns: dict[str, np.ndarray]  # array name -> string array, see COLUMNS
    fingerprint: str
    model: str = ""
    root: str = ""

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def identities(self) -> np.ndarray:
        return self.columns["identities"]

    @property
    def paths(self) -> np.ndarray:
        return self.columns["paths"]

    def has(self, name: str) -> bool:
        return bool(np.any(self.columns[name] != ""))

    def subset(self, mask: np.ndarray) -> EmbeddingSet:
        return EmbeddingSet(self.vectors[mask], {k: v[mask] for k, v in self.columns.items()},
                            self.fingerprint, self.model, self.root)

    def absolute_paths(self) -> list[str]:
        """Each image's resolved path (``paths`` are relative to ``root`` unless absolute)."""
        root = Path(self.root)
        return [str((root / p).resolve()) for p in self.paths]  # an absolute p replaces root

    def labelled_real(self) -> EmbeddingSet:
        """Without unlabelled images (a challenge's test set) and fakes: what may be scored or enrolled."""
        return self.subset((self.identities != "") & (self.columns["is_fake"] != "1"))

    def where(self, name: str, value: str | None) -> EmbeddingSet:
        return self if value is None else self.subset(self.columns[name] == value)


FINGERPRINT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # petkit writes 16 hex digits; plugins may name models otherwise


def check_vectors(vectors: np.ndarray, fingerprint: str, where: str) -> np.ndarray:
    """The one rule for vectors read or written anywhere: a finite float [N, D] matrix from a named model.

    A NaN vector scores NaN against everything (ranked arbitrarily by faiss and numpy alike) and a
    vector without a model fingerprint could be mixed with any model's: both are refused.
    """
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise PetkitError(f"{where}: vectors must be a float matrix [N, D], got {getattr(vectors, 'shape', type(vectors).__name__)}",
                          "re-create the file with 'petkit embed'")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise PetkitError(f"{where}: {int(bad.sum())} of {len(vectors)} vectors hold NaN or infinity (first at row {int(np.argmax(bad))})",
                          "the model that made them is broken (NaN weights?); re-train or embed with a sound checkpoint")
    if not isinstance(fingerprint, str) or not FINGERPRINT.fullmatch(fingerprint):
        raise PetkitError(f"{where}: no valid model fingerprint ({fingerprint!r}); vectors of unknown origin cannot be compared",
                          "re-create the file with 'petkit embed' from a checkpoint or model.onnx")
    return vectors


def from_manifest(vectors: np.ndarray, manifest: mf.Manifest, fingerprint: str, model: str) -> EmbeddingSet:
    columns = {name: np.array(manifest.values(column), dtype=str) for name, column in COLUMNS.items()}
    return EmbeddingSet(vectors.astype(np.float32), columns, fingerprint, model, str(manifest.root))


def save(path: str | Path, embeddings: EmbeddingSet) -> None:
    check_vectors(embeddings.vectors, embeddings.fingerprint, f"embeddings for {path}")
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:  # a file object: np.savez would append '.npz' to a name
            np.savez(
                handle, vectors=embeddings.vectors, format=FORMAT, version=VERSION,
                fingerprint=embeddings.fingerprint, model=embeddings.model, root=embeddings.root,
                **embeddings.columns,
            )


def load(path: str | Path) -> EmbeddingSet:
    arrays = load_versioned_npz(path, FORMAT, VERSION, "embeddings", "create it with 'petkit embed'")
    try:
        vectors = check_vectors(arrays["vectors"], str(arrays["fingerprint"]), str(path)).astype(np.float32, copy=False)
        columns = {name: arrays[name].astype(str) if name in arrays else np.full(len(vectors), "", dtype=str) for name in COLUMNS}
        model, root = str(arrays["model"]), str(arrays["root"])
    except KeyError as exc:
        raise PetkitError(f"{path} lacks the array {exc}", "re-create it with 'petkit embed'") from exc
    wrong = [name for name, column in columns.items() if column.shape != (len(vectors),)]
    if wrong:
        raise PetkitError(f"{path}: the array(s) {', '.join(wrong)} do not have one entry per vector ({len(vectors)})",
                          "the file was altered; re-create it with 'petkit embed'")
    return EmbeddingSet(vectors, columns, str(arrays["fingerprint"]), model, root)


def query_gallery(data: EmbeddingSet, query_split: str | None, gallery_split: str | None,
                  roles: bool = True) -> tuple[EmbeddingSet, EmbeddingSet | None]:
    """Queries and gallery taken from one embeddings file; a None gallery means leave-one-out.

    Different splits (closed-set, e.g. test queries against the train gallery): each side drops
    the images whose role belongs to the other side. The same split: the role column decides;
    without roles every image is scored against all the others (leave-one-out). ``roles=False``
    ignores the role column (calibration: every image of a split may play the unknown probe).
    """
    queries, gallery = data.where("splits", query_split), data.where("splits", gallery_split)
    if query_split != gallery_split:
        if not roles:
            return queries, gallery
        return queries.subset(queries.columns["roles"] != "gallery"), gallery.subset(gallery.columns["roles"] != "query")
    if roles and queries.has("roles"):
        by_role = queries.where("roles", "query"), queries.where("roles", "gallery")
        if len(by_role[0]) and len(by_role[1]):
            return by_role
    return queries, None


def select(path: str | Path, split: str | None = None, gallery_path: str | Path | None = None, gallery_split: str | None = None,
           roles: bool = True) -> tuple[EmbeddingSet, EmbeddingSet | None]:
    """(probes, gallery or None for leave-one-out): the one rule evaluate, calibrate and submit share.

    With ``gallery_path`` the gallery is that file's ``gallery_split`` (both from one model);
    otherwise both come from ``path`` by :func:`query_gallery`, the gallery split defaulting to ``split``.
    """
    data = load(path)
    if gallery_path is not None:
        probes, gallery = data.where("splits", split), load(gallery_path).where("splits", gallery_split)
        require_same_model(("probe", probes), ("gallery", gallery))
        return probes, gallery
    return query_gallery(data, split, split if gallery_split is None else gallery_split, roles)


def concat_sets(a: EmbeddingSet, b: EmbeddingSet) -> EmbeddingSet:
    columns = {k: np.concatenate([a.columns[k], b.columns[k]]) for k in a.columns}
    return EmbeddingSet(np.concatenate([a.vectors, b.vectors]), columns, a.fingerprint, a.model, a.root)


def pair_vectors(data: EmbeddingSet, pairs) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings of each pair's two images (a petkit.data.pairs.Pairs), looked up by resolved path."""
    position = {path: i for i, path in enumerate(data.absolute_paths())}
    missing = [p for p in pairs.a + pairs.b if p not in position]
    if missing:
        raise PetkitError(f"{len(set(missing))} image(s) of the pairs file are not in the embeddings, e.g. {missing[0]}",
                          "embed the pairs file itself: petkit embed MODEL pairs.csv -o pairs.npz")
    return data.vectors[[position[p] for p in pairs.a]], data.vectors[[position[p] for p in pairs.b]]


def require_same_model(*sets: tuple[str, EmbeddingSet]) -> None:
    fingerprints = {emb.fingerprint for _, emb in sets}
    if len(fingerprints) > 1:
        detail = ", ".join(f"{name} from model {emb.fingerprint}" for name, emb in sets)
        raise PetkitError(
            f"embeddings come from different models ({detail}); their vectors are not comparable",
            "embed the query and gallery images with the same checkpoint or model.onnx",
        )
