"""``petkit export-onnx``: checkpoint -> model.onnx (dynamic batch) + a parity report.

The ONNX graph takes ``images``: float32 [B, 3, S, S] RGB in [0, 1] and returns
``embeddings``: float32 [B, D], L2-normalised; mean/std normalisation is inside. The metadata
holds the model card (image size, statistics, embedding width, fingerprint, architecture), so
vectors embedded through ONNX compare with vectors from the checkpoint. The file is served by
``petkit.engine.embedder.OnnxEmbedder``, through the same embedding loop as a checkpoint.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from petkit.engine.embedder import INPUT, OUTPUT, SEAL, OnnxEmbedder, TorchEmbedder, onnx_seal
from petkit.engine.engine import Engine
from petkit.errors import PetkitError
from petkit.interfaces import Embedder
from petkit.io import atomic_path, refuse_overwrite, write_json
from petkit.limits import OPSETS, Range, checked
from petkit.models.card import ModelCard

__all__ = ["INPUT", "OUTPUT", "OnnxEmbedder", "ParityReport", "check_parity", "export_onnx"]


@dataclass
class ParityReport:
    samples: int
    max_abs_diff: float
    min_cosine: float
    atol: float
    passed: bool
    inputs: str  # where the parity images came from
    provider: str

    def to_dict(self) -> dict:
        return {"format": "petkit.onnx-parity", "version": 1, **self.__dict__}


@checked
def export_onnx(checkpoint: str | Path, output: str | Path, parity_source: str | Path | None = None,
                samples: Annotated[int, Range(1, 4096)] = 16, atol: Annotated[float, Range(0, 1)] = 1e-3,
                opset: Annotated[int, OPSETS] = 18, overwrite: bool = False) -> ParityReport:
    """Export, reload with onnxruntime, and compare with PyTorch on real images; nothing is written on a mismatch."""
    from petkit.models.checkpoint import load_checkpoint

    output = Path(output)
    parity_path = output.with_name(output.name + ".parity.json")
    refuse_overwrite([output, parity_path], overwrite, inputs=(checkpoint, parity_source))
    loaded = load_checkpoint(checkpoint)
    model = loaded.model.float().eval()
    card = loaded.card
    batch, described = _parity_images(loaded, Path(checkpoint), parity_source, samples)
    cpu = Engine.create("cpu", "fp32", channels_last=False)  # exact fp32 on both sides: checks the file, not a provider
    with atomic_path(output) as tmp:
        _export(model, tmp, card.image_size, opset)
        _write_metadata(tmp, card, opset)
        report = check_parity(TorchEmbedder(model, cpu, card), OnnxEmbedder(tmp, cpu), batch, atol, described)
        if not report.passed:
            raise PetkitError(
                f"ONNX output differs from PyTorch: max |diff| {report.max_abs_diff:.2e} > {atol:g} "
                f"(min cosine {report.min_cosine:.6f}); {output} was not written",
                "try another --opset, or raise --atol if the difference is acceptable",
            )
    write_json(parity_path, report.to_dict())
    return report


def _export(model: torch.nn.Module, path: Path, size: int, opset: int) -> None:
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # the exporter narrates each pass on stdout
        torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes={INPUT: {0: batch}}, opset_version=opset, dynamo=True,
            external_data=False, verbose=False,
        )


def _write_metadata(path: Path, card: ModelCard, opset: int) -> None:
    import onnx

    graph = onnx.load(str(path))
    written = {entry.domain: entry.version for entry in graph.opset_import}.get("", None)
    if written != opset:
        raise PetkitError(f"the exporter wrote opset {written}, not the --opset {opset} asked for", "use --opset 18 (the default)")
    del graph.metadata_props[:]
    metadata = card.to_metadata()
    metadata[SEAL] = onnx_seal(graph, metadata["petkit_card"])
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _training_manifest(loaded, checkpoint: Path) -> str | None:
    """The manifest a run trained on: from a run checkpoint, else from the run's config.yaml beside best.pt."""
    config = loaded.config
    if config is None and (checkpoint.parent / "config.yaml").is_file():
        import yaml

        try:
            config = yaml.safe_load((checkpoint.parent / "config.yaml").read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            config = None
    data = config.get("data") if isinstance(config, dict) else None
    manifest = data.get("manifest") if isinstance(data, dict) else None
    return manifest if isinstance(manifest, str) else None


def _parity_images(loaded, checkpoint: Path, source, samples: int) -> tuple[torch.Tensor, str]:
    from petkit.data.batches import ImageStore
    from petkit.data.sources import open_source

    if source is None:
        source = _training_manifest(loaded, checkpoint)
    if not source or not Path(source).exists():
        raise PetkitError(
            "no images to check ONNX parity on: the training manifest is not reachable",
            "pass --images MANIFEST_OR_FOLDER with a few real images",
        )
    manifest = open_source(source)
    picks = np.linspace(0, len(manifest) - 1, num=min(samples, len(manifest))).astype(int)
    store = ImageStore(manifest, loaded.card.image_size, cache=False)
    _, batch = next(store.batches([picks.tolist()]))
    return batch, f"{len(picks)} images from {source}"


def check_parity(reference: Embedder, candidate: Embedder, batch: torch.Tensor, atol: float, described: str) -> ParityReport:
    """Embed one uint8 batch with both embedders and compare."""
    expected, got = reference(batch), candidate(batch)
    cosine = np.sum(expected * got, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    diff = float(np.abs(expected - got).max())
    return ParityReport(len(batch), diff, float(cosine.min()), atol, diff <= atol, described, candidate.describe())
