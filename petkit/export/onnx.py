"""``petkit export-onnx``: checkpoint -> model.onnx (dynamic batch) + a parity report.

The ONNX graph takes ``images``: float32 [B, 3, S, S] RGB in [0, 1] and returns
``embeddings``: float32 [B, D], L2-normalised; mean/std normalisation is inside. Metadata
properties carry the image size, the petkit version and the checkpoint's fingerprint, so
vectors embedded through ONNX can be compared with vectors from the checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from petkit import __version__
from petkit.errors import PetkitError
from petkit.io import atomic_path, write_json

INPUT, OUTPUT = "images", "embeddings"


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


def export_onnx(checkpoint: str | Path, output: str | Path, parity_source: str | Path | None = None,
                samples: int = 16, atol: float = 1e-3, opset: int = 18) -> ParityReport:
    """Export, reload with onnxruntime, and compare with PyTorch on real images."""
    from petkit.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    model = loaded.model.float().eval()
    size = loaded.preprocessing.image_size
    images, described = _parity_images(loaded, parity_source, samples)
    output = Path(output)
    with atomic_path(output) as tmp:
        _export(model, tmp, size, opset)
        _write_metadata(tmp, loaded)
        report = check_parity(model, tmp, images, atol, described)
        if not report.passed:
            raise PetkitError(
                f"ONNX output differs from PyTorch: max |diff| {report.max_abs_diff:.2e} > {atol:g} "
                f"(min cosine {report.min_cosine:.6f}); {output} was not written",
                "try another --opset, or raise --atol if the difference is acceptable",
            )
    write_json(output.with_name(output.name + ".parity.json"), report.to_dict())
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


def _write_metadata(path: Path, loaded) -> None:
    import onnx

    graph = onnx.load(str(path))
    pre = loaded.preprocessing
    props = {
        "petkit_version": __version__, "fingerprint": loaded.fingerprint, "image_size": str(pre.image_size),
        "mean": json.dumps(list(pre.mean)), "std": json.dumps(list(pre.std)),
        "input": "images: float32 [B,3,S,S] RGB in [0,1]; normalisation is inside the graph",
        "embedding_dim": str(loaded.model.embedding_dim),
    }
    del graph.metadata_props[:]
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _parity_images(loaded, source, samples: int) -> tuple[torch.Tensor, str]:
    from petkit.data.batches import ImageStore
    from petkit.data.sources import open_source

    source = source or loaded.config.data.manifest
    if not source or not Path(source).exists():
        raise PetkitError(
            "no images to check ONNX parity on: the training manifest is not reachable",
            "pass --images MANIFEST_OR_FOLDER with a few real images",
        )
    manifest = open_source(source)
    picks = np.linspace(0, len(manifest) - 1, num=min(samples, len(manifest))).astype(int)
    store = ImageStore(manifest, loaded.preprocessing.image_size, cache=False)
    _, batch = next(store.batches([picks.tolist()]))
    return batch.float() / 255.0, f"{len(picks)} images from {source}"


def check_parity(model: torch.nn.Module, onnx_path: Path, images: torch.Tensor, atol: float, described: str) -> ParityReport:
    session = _session(onnx_path, "cpu")  # exact fp32 on both sides: checks the file, not a provider's kernels
    with torch.no_grad():
        expected = model(images).numpy()
    got = session.run([OUTPUT], {INPUT: images.numpy()})[0]
    cosine = np.sum(expected * got, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    diff = float(np.abs(expected - got).max())
    return ParityReport(len(images), diff, float(cosine.min()), atol, diff <= atol, described, session.get_providers()[0])


def _session(path: str | Path, device: str):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep provider chatter off the console
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise PetkitError(f"onnxruntime cannot load {path}: {exc}", "re-export with 'petkit export-onnx'") from exc


class OnnxEmbedder:
    """Embeds images with a model.onnx written by petkit (CUDA provider when available)."""

    def __init__(self, path: str | Path, device: str = "auto"):
        path = Path(path)
        if not path.is_file():
            raise PetkitError(f"ONNX model not found: {path}", "create it with 'petkit export-onnx'")
        self.session = _session(path, device)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "fingerprint" not in meta or "image_size" not in meta:
            raise PetkitError(f"{path} was not exported by petkit (no petkit metadata)", "export it with 'petkit export-onnx'")
        self.fingerprint = meta["fingerprint"]
        self.image_size = int(meta["image_size"])

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: images.astype(np.float32, copy=False)})[0]

    def embed_store(self, store, batch_size: int, flip_tta: bool, progress: Callable[[int], None] | None) -> np.ndarray:
        from petkit.data.batches import sequential

        out = []
        for indices, batch in store.batches(sequential(len(store), batch_size)):
            images = batch.numpy().astype(np.float32) / 255.0
            vectors = self(images)
            if flip_tta:
                vectors = vectors + self(np.ascontiguousarray(images[..., ::-1]))
            out.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
            if progress:
                progress(len(indices))
        return np.concatenate(out).astype(np.float32)
