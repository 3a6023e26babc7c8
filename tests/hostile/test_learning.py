"""2. No silent wrong results from training: runs that cannot learn or that collapse stop with a
reason, a run that only made the model worse says so, and the components that silently did not
learn (scratch_mobilenet, cross-entropy + center loss) are checked to learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from petkit.errors import PetkitError

TINY = ["data.image_size=32", "train.device=cpu", "train.precision=fp32", "train.early_stopping_patience=null"]


@pytest.fixture(scope="module")
def seen_identities(tmp_path_factory):
    """12 synthetic identities x 6 photos split by image: val images are of identities trained on."""
    from petkit.data.prepare import PrepareOptions, prepare
    from petkit.data.synthetic import generate

    root = tmp_path_factory.mktemp("learning")
    photos = generate(root / "photos", identities=12, images_per_identity=6, size=32, seed=3)
    return prepare(photos, root / "data", PrepareOptions(split_by="image", ratios=(0.67, 0.33, 0.0))).manifest_path


def _config(manifest, tmp_path, *overrides):
    from petkit.config import resolve

    return resolve(None, [f"data.manifest={manifest}", f"output_dir={tmp_path}", "name=r", *TINY, *overrides])


def test_a_batch_without_positive_pairs_stops_the_run(seen_identities, tmp_path):
    from petkit.engine.trainer import train

    config = _config(seen_identities, tmp_path, "train.epochs=2", "data.sampler.args={p: 8, k: 1}")
    with pytest.raises(PetkitError, match="no batch of the epoch held two images of one identity"):
        train(config)
    assert not (config.run_dir / "best.pt").exists()


def test_collapsed_embeddings_stop_the_run_with_that_reason(seen_identities, tmp_path, monkeypatch):
    from petkit.engine import trainer as T
    from petkit.models.model import EmbeddingModel

    real_forward = EmbeddingModel.forward

    def constant(self, images):  # every image to one point, as the broken scratch_mobilenet did
        out = real_forward(self, images)
        return out * 0 + out.mean(0, keepdim=True) if not self.training else out

    monkeypatch.setattr(EmbeddingModel, "forward", constant)
    config = _config(seen_identities, tmp_path, "train.epochs=2")
    with pytest.raises(PetkitError, match="the embeddings collapsed"):
        T.train(config)
    assert "the embeddings collapsed" in (config.run_dir / "train.log").read_text()


def test_a_run_worse_than_untrained_says_so(seen_identities, tmp_path, monkeypatch):
    from petkit.engine import trainer as T

    scores = iter([0.9, 0.5, 0.6])

    def fake_validate(self, trained=False):
        return {f"val_{k}": 0.0 for k in T.VAL_METRICS} | {"val_recall@1": next(scores)}

    monkeypatch.setattr(T.Trainer, "validate", fake_validate)
    result = T.train(_config(seen_identities, tmp_path, "train.epochs=2"))
    assert any("below the untrained model" in w for w in result.warnings)
    assert "recall@1 0.6000 at best vs 0.9000 at epoch 0" in (result.run_dir / "train.log").read_text()


def _spread(checkpoint, manifest) -> float:
    """Mean distance of the val embeddings from their centroid (the trainer's collapse measure)."""
    from petkit.engine.embedder import embed

    vectors = embed(checkpoint, manifest, split="val", device="cpu").vectors
    return float(np.linalg.norm(vectors - vectors.mean(axis=0), axis=1).mean())


@pytest.mark.parametrize("backbone", ["scratch_mobilenet", "scratch_resnet", "scratch_convnext"])
def test_every_scratch_backbone_learns_without_collapsing(backbone, seen_identities, tmp_path):
    """Two epochs at 32 px: the loss falls and the val embeddings spread out. With torch's fan-out
    initialisation scratch_mobilenet's features were 1e-8 and its val images all embedded to one point."""
    from petkit.engine import trainer as T
    from petkit.engine.trainer import train

    result = train(_config(seen_identities, tmp_path, "train.epochs=3", f"model.backbone.name={backbone}",
                           "data.sampler.args={p: 6, k: 4}"))
    losses = [row["train_loss"] for row in result.history if row["epoch"] > 0]
    assert losses[-1] < losses[0]
    assert _spread(result.best_checkpoint, seen_identities) > 2 * T.COLLAPSED_SPREAD  # the broken init measured 9.4e-4


def test_cross_entropy_with_center_loss_learns(seen_identities, tmp_path):
    """The face-classification recipe: the loss must leave ln(identities) (it sat there for 8 epochs
    with a linear classifier on L2-normalised embeddings) and the classifier must beat chance."""
    from petkit.engine.trainer import train

    loss = ("loss={name: sum, args: {losses: [{name: cross_entropy, args: {label_smoothing: 0.1}, weight: 1.0}, "
            "{name: center, weight: 0.005}]}}")
    result = train(_config(seen_identities, tmp_path, "train.epochs=5", loss, "model.backbone.name=scratch_resnet",
                           "data.sampler={name: class_balanced, args: {batch_size: 24}}", "train.val_metric=accuracy"))
    chance = math.log(12)
    losses = [row["train_loss"] for row in result.history if row["epoch"] > 0]
    assert losses[-1] < chance - 0.5, losses
    assert max(row["val_accuracy"] for row in result.history if row["epoch"] > 0) > 2 / 12  # twice chance
    assert torch.isfinite(torch.tensor(losses)).all()
