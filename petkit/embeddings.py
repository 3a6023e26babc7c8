"""embeddings.npz: vectors plus everything needed to score them, and ``embed()`` that writes it.

Arrays (all of length N unless noted): ``vectors`` float32 [N, D] L2-normalised; ``paths``,
``identities``, ``splits``, ``roles``, ``sequences``, ``is_fake``, ``categories`` (strings,
empty where the manifest has no value); scalars ``format``, ``version``, ``fingerprint``
(of the model that made them), ``model`` (its path), ``root`` (folder the paths start from).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def from_manifest(vectors: np.ndarray, manifest: mf.Manifest, fingerprint: str, model: str) -> EmbeddingSet:
    columns = {name: np.array(manifest.values(column), dtype=str) for name, column in COLUMNS.items()}
    return EmbeddingSet(vectors.astype(np.float32), columns, fingerprint, model, str(manifest.root))


def save(path: str | Path, embeddings: EmbeddingSet) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:  # a file object: np.savez would append '.npz' to a name
            np.savez(
                handle, vectors=embeddings.vectors, format=FORMAT, version=VERSION,
                fingerprint=embeddings.fingerprint, model=embeddings.model, root=embeddings.root,
                **embeddings.columns,
            )


def load(path: str | Path) -> EmbeddingSet:
    arrays = load_versioned_npz(path, FORMAT, VERSION, "embeddings", "create it with 'petkit embed'")
    vectors = arrays["vectors"].astype(np.float32, copy=False)
    columns = {name: arrays[name].astype(str) if name in arrays else np.full(len(vectors), "", dtype=str) for name in COLUMNS}
    return EmbeddingSet(vectors, columns, str(arrays["fingerprint"]), str(arrays["model"]), str(arrays["root"]))


def query_gallery(data: EmbeddingSet, query_split: str | None, gallery_split: str | None) -> tuple[EmbeddingSet, EmbeddingSet | None]:
    """Queries and gallery taken from one embeddings file; a None gallery means leave-one-out.

    Different splits (closed-set, e.g. test queries against the train gallery): each side drops
    the images whose role belongs to the other side. The same split: the role column decides;
    without roles every image is scored against all the others (leave-one-out).
    """
    queries, gallery = data.where("splits", query_split), data.where("splits", gallery_split)
    if query_split != gallery_split:
        return queries.subset(queries.columns["roles"] != "gallery"), gallery.subset(gallery.columns["roles"] != "query")
    if queries.has("roles"):
        by_role = queries.where("roles", "query"), queries.where("roles", "gallery")
        if len(by_role[0]) and len(by_role[1]):
            return by_role
    return queries, None


def require_same_model(*sets: tuple[str, EmbeddingSet]) -> None:
    fingerprints = {emb.fingerprint for _, emb in sets}
    if len(fingerprints) > 1:
        detail = ", ".join(f"{name} from model {emb.fingerprint}" for name, emb in sets)
        raise PetkitError(
            f"embeddings come from different models ({detail}); their vectors are not comparable",
            "embed the query and gallery images with the same checkpoint or model.onnx",
        )


def default_workers() -> int:
    """Decoding workers when the caller does not say: every core, up to 8."""
    return max(1, min(8, os.cpu_count() or 1))


def embed(
    model_path: str | Path,
    source: str | Path,
    split: str | None = None,
    batch_size: int = 64,
    flip_tta: bool = False,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    fmt: str | None = None,
) -> EmbeddingSet:
    """Embed every image of a dataset source (see petkit.data.sources; ``fmt`` names one, else it is
    detected) with a checkpoint or model.onnx."""
    from petkit.data.batches import ImageStore
    from petkit.data.sources import open_source

    workers = default_workers() if workers is None else workers
    manifest = open_source(source, fmt).select(split)
    if not len(manifest):
        raise PetkitError(f"no images with split '{split}' in {source}", "check --split against the manifest's split column")
    if on_total:
        on_total(len(manifest))
    if str(model_path).endswith(".onnx"):
        from petkit.export.onnx import OnnxEmbedder

        embedder = OnnxEmbedder(model_path, device=device)
        store = ImageStore(manifest, embedder.image_size, cache=False, num_workers=workers)
        vectors = embedder.embed_store(store, batch_size, flip_tta, progress)
        return from_manifest(vectors, manifest, embedder.fingerprint, str(model_path))

    from petkit.engine.engine import Engine
    from petkit.engine.inference import embed_store
    from petkit.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(model_path)
    engine = Engine.create(device, precision, loaded.config.train.channels_last)
    store = ImageStore(manifest, loaded.preprocessing.image_size, cache=False, num_workers=workers)
    vectors = embed_store(loaded.model, store, engine, batch_size, flip_tta, progress)
    return from_manifest(vectors, manifest, loaded.fingerprint, str(model_path))
