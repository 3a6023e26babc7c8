"""The one embedding loop, behind an :class:`~petkit.interfaces.Embedder`: a torch model or an ONNX session.

``embed``, validation during training, ``search``, the ONNX parity check and the demo all embed
through :func:`embed_store`: uint8 batches from an :class:`~petkit.data.batches.ImageStore`, an
optional mirrored pass (flip TTA), L2-normalised float32 out. Device and precision come from the
:class:`~petkit.engine.engine.Engine`; inference picks its own memory layout (channels-last)
instead of reading the training config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from petkit.data.batches import ImageStore, sequential
from petkit.engine.engine import Engine
from petkit.errors import PetkitError
from petkit.interfaces import Embedder
from petkit.models.card import ModelCard
from petkit.models.model import EmbeddingModel

INPUT, OUTPUT = "images", "embeddings"  # the ONNX graph's input and output names (petkit.export.onnx)


class TorchEmbedder(Embedder):
    """An :class:`EmbeddingModel` in eval mode with batch norms folded, on the engine's device and precision."""

    def __init__(self, model: EmbeddingModel, engine: Engine, card: ModelCard | None = None):
        self.engine = engine
        self.card = card or model.current_card()
        self.model = engine.inference_copy(model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> TorchEmbedder:
        from petkit.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        return cls(loaded.model, Engine.create(device, precision, channels_last=True), loaded.card)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = self.engine.images(images)
        with self.engine.autocast():
            vectors = self.model(batch)
        return F.normalize(vectors.float(), dim=1).cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.engine.describe()}"


class OnnxEmbedder(Embedder):
    """A model.onnx written by petkit, on the engine's device (the CUDA provider on cuda:N)."""

    def __init__(self, path: str | Path, engine: Engine):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise PetkitError(f"ONNX model not found: {path}", "create it with 'petkit export-onnx'")
        self.engine = engine
        options = ort.SessionOptions()
        options.log_severity_level = 3  # keep provider chatter off the console
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=engine.onnx_providers())
        except Exception as exc:
            raise PetkitError(f"onnxruntime cannot load {path}: {exc}", "re-export with 'petkit export-onnx'") from exc
        self.card = ModelCard.from_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = images.numpy().astype(np.float32) / 255.0
        vectors = self.session.run([OUTPUT], {INPUT: batch})[0]
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    def describe(self) -> str:
        return self.provider


def open_embedder(model_path: str | Path, device: str = "auto", precision: str = "auto") -> Embedder:
    """A checkpoint (.pt) or a model.onnx, ready to embed on ``device``."""
    if str(model_path).endswith(".onnx"):
        if precision not in ("auto", "fp32"):
            raise PetkitError(f"--precision {precision} does not apply to an ONNX model: it runs in the fp32 it was exported in",
                              "leave --precision at auto (or fp32), or embed with the checkpoint for mixed precision")
        return OnnxEmbedder(model_path, Engine.create(device, "fp32", channels_last=False))
    return TorchEmbedder.from_checkpoint(model_path, device, precision)


def embed_store(embedder: Embedder, store: ImageStore, batch_size: int = 128, flip_tta: bool = False,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 [N, D], L2-normalised, in store order; ``flip_tta`` averages with the mirrored image."""
    if batch_size < 1:
        raise PetkitError(f"batch size must be >= 1, got {batch_size}", "for example --batch-size 64")
    out = []
    for indices, batch in store.batches(sequential(len(store), batch_size)):
        vectors = embedder(batch)
        if flip_tta:
            vectors = vectors + embedder(batch.flip(3))
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        out.append(vectors.astype(np.float32, copy=False))
        if progress:
            progress(len(indices))
    if not out:
        return np.zeros((0, embedder.card.embedding_dim), dtype=np.float32)
    return np.concatenate(out)


def default_workers() -> int:
    """Decoding workers when the caller does not say: every core, up to 8."""
    import os

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
    out: str | Path | None = None,
    overwrite: bool = False,
):
    """Embed every image of a dataset source (petkit.data.sources; ``fmt`` names one, else it is
    detected) with a checkpoint or model.onnx; with ``out``, also write embeddings.npz there
    (refused if it exists unless ``overwrite``)."""
    from petkit import embeddings as emb
    from petkit.data.sources import open_source
    from petkit.io import refuse_overwrite

    if out is not None:
        refuse_overwrite([Path(out)], overwrite)
    workers = default_workers() if workers is None else workers
    manifest = open_source(source, fmt).select(split)
    if not len(manifest):
        raise PetkitError(f"no images with split '{split}' in {source}", "check --split against the manifest's split column")
    embedder = open_embedder(model_path, device, precision)
    if on_total:
        on_total(len(manifest))
    store = ImageStore(manifest, embedder.image_size, cache=False, num_workers=workers)
    vectors = embed_store(embedder, store, batch_size, flip_tta, progress)
    result = emb.from_manifest(vectors, manifest, embedder.fingerprint, str(model_path))
    if out is not None:
        emb.save(out, result)
    return result
