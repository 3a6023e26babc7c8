"""The one embedder: torch checkpoint and ONNX session through the same loop give the same vectors;
precision on an ONNX model is refused rather than ignored; flip TTA is the normalised sum of both views."""

from pathlib import Path

import numpy as np
import pytest
import torch

from petkit.data.batches import ImageStore
from petkit.data.sources import open_source
from petkit.engine.embedder import OnnxEmbedder, TorchEmbedder, embed, embed_store, open_embedder
from petkit.errors import PetkitError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from petkit.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(FIXTURES / "checkpoint-v0.1.0.pt", out, FIXTURES / "fixture-photos")
    return out


def test_torch_and_onnx_embed_the_same_through_one_loop(exported):
    manifest = open_source(FIXTURES / "fixture-photos")
    torch_embedder = open_embedder(FIXTURES / "checkpoint-v0.1.0.pt", "cpu", "fp32")
    onnx_embedder = open_embedder(exported, "cpu")
    assert isinstance(torch_embedder, TorchEmbedder) and isinstance(onnx_embedder, OnnxEmbedder)
    assert onnx_embedder.card == torch_embedder.card  # the card travelled into the ONNX metadata whole
    store = ImageStore(manifest, torch_embedder.image_size, cache=True)
    a, b = embed_store(torch_embedder, store, batch_size=4), embed_store(onnx_embedder, store, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a, np.load(FIXTURES / "checkpoint-v0.1.0.vectors.npz")["vectors"], atol=1e-5)
    flipped = embed_store(torch_embedder, store, flip_tta=True)
    mirror = embed_store(torch_embedder, _Mirrored(store))
    expected = a + mirror
    np.testing.assert_allclose(flipped, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


class _Mirrored:
    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def batches(self, index_lists):
        for indices, batch in self.store.batches(index_lists):
            yield indices, batch.flip(3)


def test_precision_on_an_onnx_model_is_refused_not_ignored(exported, tmp_path):
    with pytest.raises(PetkitError, match="--precision bf16 does not apply to an ONNX model"):
        open_embedder(exported, "cpu", "bf16")
    if not torch.cuda.is_available():  # the device goes through the engine, not around it
        with pytest.raises(PetkitError, match="CUDA is not available"):
            open_embedder(exported, "cuda:1")


def test_embed_owns_its_output_and_its_overwrite_check(tmp_path):
    out = tmp_path / "e.npz"
    first = embed(FIXTURES / "checkpoint-v0.1.0.pt", FIXTURES / "fixture-photos", device="cpu", out=out)
    assert out.is_file() and len(first) == 6
    with pytest.raises(PetkitError, match="output already exists"):
        embed(FIXTURES / "checkpoint-v0.1.0.pt", FIXTURES / "fixture-photos", device="cpu", out=out)
    with pytest.raises(PetkitError, match="--batch-size is 0"):
        embed(FIXTURES / "checkpoint-v0.1.0.pt", FIXTURES / "fixture-photos", device="cpu", batch_size=0)
