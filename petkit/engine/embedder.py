"""The one embedding loop, behind an :class:`~petkit.interfaces.Embedder`: a torch model or an ONNX session.

``embed``, validation during training, ``search``, the ONNX parity check and the demo all embed
through :func:`embed_store`: uint8 batches from an :class:`~petkit.data.batches.ImageStore`, an
optional mirrored pass (flip TTA), L2-normalised float32 out. Device and precision come from the
:class:`~petkit.engine.engine.Engine`; inference picks its own memory layout (channels-last)
instead of reading the training config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import torch
import torch.nn.functional as F

from petkit.data.batches import ImageStore, sequential
from petkit.engine.engine import Engine
from petkit.errors import PetkitError
from petkit.interfaces import Embedder
from petkit.limits import Range, checked
from petkit.models.card import ModelCard
from petkit.models.model import EmbeddingModel

INPUT, OUTPUT = "images", "embeddings"  # the ONNX graph's input and output names (petkit.export.onnx)

BATCH = Range(1, 65536, hint="for example --batch-size 64")


class TorchEmbedder(Embedder):
    """An :class:`EmbeddingModel` in eval mode with batch norms folded, on the engine's device and precision."""

    def __init__(self, model: EmbeddingModel, engine: Engine, card: ModelCard | None = None):
        self.engine = engine
        self.card = card or model.current_card()
        self.model = engine.inference_copy(model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto", untrained_seed: int | None = None) -> TorchEmbedder:
        """``untrained_seed``: the checkpoint's architecture with the weights it started from (seeded as
        'petkit train' seeds with train.seed), for 'before training' maps; its fingerprint is its own."""
        from petkit.models.checkpoint import load_checkpoint
        from petkit.models.model import model_from_card

        loaded = load_checkpoint(path)
        model, card = loaded.model, loaded.card
        if untrained_seed is not None:
            torch.manual_seed(untrained_seed)
            model = model_from_card(card).eval()
            card = model.current_card()
        return cls(model, Engine.create(device, precision, channels_last=True), card)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = self.engine.images(images)
        with self.engine.autocast():
            vectors = self.model(batch)
        return F.normalize(vectors.float(), dim=1).cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.engine.describe()}"


SEAL = "petkit_seal"  # ONNX metadata: a hash of the model card and the graph's weights


def onnx_seal(graph, card_json: str) -> str:
    """Binds the card (and so its fingerprint) to the weights of an ONNX graph: editing either breaks it.

    Not a signature (anyone running petkit can compute it): it catches a file whose fingerprint entry
    was edited to pass as another model, or whose weights were replaced after export.
    """
    import hashlib

    from onnx import numpy_helper

    digest = hashlib.sha256(card_json.encode())
    for tensor in sorted(graph.graph.initializer, key=lambda t: t.name):
        digest.update(tensor.name.encode())
        digest.update(numpy_helper.to_array(tensor).tobytes())
    return digest.hexdigest()[:32]


def verify_onnx(path: Path) -> None:
    """Refuse an ONNX file petkit did not write as it is: external weight files, a missing or broken seal."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise PetkitError(f"{path} is not a readable ONNX model: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}",
                          "re-export it with 'petkit export-onnx'") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer):
        raise PetkitError(f"{path} keeps its weights in external files, which petkit never writes (they may point anywhere)",
                          "re-export it with 'petkit export-onnx'")
    meta = {entry.key: entry.value for entry in graph.metadata_props}
    if "petkit_card" not in meta or SEAL not in meta:
        raise PetkitError(f"{path} carries no petkit seal (exported by another tool or by petkit 0.1)",
                          "re-export it from the checkpoint with 'petkit export-onnx'")
    if onnx_seal(graph, meta["petkit_card"]) != meta[SEAL]:
        raise PetkitError(f"{path}: the model card or the weights were changed after export (the seal does not match)",
                          "use the model.onnx that 'petkit export-onnx' wrote, or export it again")


class OnnxEmbedder(Embedder):
    """A model.onnx written by petkit, on the engine's device (the CUDA provider on cuda:N)."""

    def __init__(self, path: str | Path, engine: Engine):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise PetkitError(f"ONNX model not found: {path}", "create it with 'petkit export-onnx'")
        verify_onnx(path)
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


def open_embedder(model_path: str | Path, device: str = "auto", precision: str = "auto", untrained_seed: int | None = None) -> Embedder:
    """A checkpoint (.pt) or a model.onnx, ready to embed on ``device``."""
    if str(model_path).endswith(".onnx"):
        if untrained_seed is not None:
            raise PetkitError("--untrained needs a checkpoint: an ONNX file holds only its trained weights", "pass best.pt")
        if precision not in ("auto", "fp32"):
            raise PetkitError(f"--precision {precision} does not apply to an ONNX model: it runs in the fp32 it was exported in",
                              "leave --precision at auto (or fp32), or embed with the checkpoint for mixed precision")
        return OnnxEmbedder(model_path, Engine.create(device, "fp32", channels_last=False))
    return TorchEmbedder.from_checkpoint(model_path, device, precision, untrained_seed)


@checked
def embed_store(embedder: Embedder, store: ImageStore, batch_size: Annotated[int, BATCH] = 128, flip_tta: bool = False,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 [N, D], L2-normalised, in store order; ``flip_tta`` averages with the mirrored image."""
    out = []
    for indices, batch in store.batches(sequential(len(store), batch_size)):
        vectors = embedder(batch)
        if flip_tta:
            vectors = vectors + embedder(batch.flip(3))
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        if not np.isfinite(vectors).all():
            bad = store.paths_of(indices, ~np.isfinite(vectors).all(axis=1))
            raise PetkitError(f"the model gave NaN or infinite embeddings for {len(bad)} image(s), e.g. {bad[0]}",
                              "the weights are broken or overflow in reduced precision; try --precision fp32 or another checkpoint")
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


@checked
def embed(
    model_path: str | Path,
    source: str | Path,
    split: str | None = None,
    batch_size: Annotated[int, BATCH] = 64,
    flip_tta: bool = False,
    device: str = "auto",
    precision: str = "auto",
    workers: Annotated[int, Range(0, 256)] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    fmt: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    skipped: list[tuple[str, str]] | None = None,
    untrained_seed: Annotated[int, Range(0, 2**63 - 1)] | None = None,
):
    """Embed every image of a dataset source (petkit.data.sources; ``fmt`` names one, else it is
    detected) with a checkpoint or model.onnx; with ``out``, also write embeddings.npz there
    (refused if it exists unless ``overwrite``). With a ``skipped`` list, images that cannot be decoded
    are left out and recorded there as (path, reason) instead of ending the call."""
    from petkit import embeddings as emb
    from petkit.data import manifest as mf
    from petkit.data.sources import open_source
    from petkit.io import refuse_overwrite

    if out is not None:
        refuse_overwrite([Path(out)], overwrite, inputs=(model_path, source))
    workers = default_workers() if workers is None else workers
    manifest = open_source(source, fmt).select(split)
    if not len(manifest):
        raise PetkitError(f"no images with split '{split}' in {source}", "check --split against the manifest's split column")
    embedder = open_embedder(model_path, device, precision, untrained_seed)
    if on_total:
        on_total(len(manifest))
    store = ImageStore(manifest, embedder.image_size, cache=False, num_workers=workers, skip_unreadable=skipped is not None)
    vectors = embed_store(embedder, store, batch_size, flip_tta, progress)
    if store.failed:
        skipped.extend((str(manifest.abspath(manifest.rows[i])), reason) for i, reason in sorted(store.failed.items()))
        keep = np.array([i not in store.failed for i in range(len(manifest))])
        if not keep.any():
            raise PetkitError(f"none of the {len(manifest)} images under {source} could be decoded", "check the files; see the first: " + skipped[0][1])
        manifest = mf.Manifest(manifest.root, [r for r, k in zip(manifest.rows, keep) if k], manifest.columns)
        vectors = vectors[keep]
    result = emb.from_manifest(vectors, manifest, embedder.fingerprint, str(Path(model_path).resolve()))  # found from any folder
    if out is not None:
        emb.save(out, result)
    return result
