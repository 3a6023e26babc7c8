"""A head that starts from the backbone's own features (the pretrained recipe's ``train.head_init: features``).

A randomly initialised projection head throws away much of what pretrained features know: on unseen
dogs (ImageNet EfficientNet-Lite0, 160 px, leave-one-out test Recall@1) the pooled features score
0.776, a random 128-d orthogonal projection of them 0.722 and the random default MLP head 0.706,
while the whitened principal components of the *train* images' features score 0.782 at 128-d. So
the head is set to compute that projection, ``W (x - centre)``, before training starts (the
head's ``start_linear``), and fine-tuning begins no worse than the features themselves.
"""

from __future__ import annotations

import torch

from petkit.data.batches import ImageStore, sequential
from petkit.engine.engine import Engine
from petkit.models.model import EmbeddingModel

BATCH = 64


def whitened_pca(features: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [dim, F], centre [F]) with W (x - centre) the first ``dim`` principal components of ``features``
    [N, F], each scaled to unit variance (sklearn's ``PCA(whiten=True).transform``, up to each axis' sign)."""
    x = features.double()
    centre = x.mean(dim=0)
    _, singular, vt = torch.linalg.svd(x - centre, full_matrices=False)
    std = singular[:dim] / max(len(x) - 1, 1) ** 0.5
    floor = std[0] * 1e-6  # a direction the data does not span stays finite
    return (vt[:dim] / (std.clamp(min=floor))[:, None]).float(), centre.float()


@torch.no_grad()
def backbone_features(model: EmbeddingModel, store: ImageStore, engine: Engine) -> torch.Tensor:
    """The pooled backbone features of every image in ``store`` (no augmentation, batch norms in inference mode)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for _, batch in store.batches(sequential(len(store), BATCH)):
            images = engine.images(batch)
            if engine.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with engine.autocast():
                out.append(model.features(images).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def start_head_from_features(model: EmbeddingModel, store: ImageStore, engine: Engine, start_linear) -> str:
    """Set the head to the whitened PCA of the train images' features; returns what was done, for train.log."""
    dim = model.embedding_dim
    if len(store) <= dim:
        return f"head kept its random start: {len(store)} train images cannot span {dim} principal components"
    features = backbone_features(model, store, engine)
    if features.shape[1] < dim:
        return f"head kept its random start: the backbone gives {features.shape[1]} features, fewer than the {dim} of the embedding"
    w, centre = whitened_pca(features, dim)
    device = next(model.head.parameters()).device
    start_linear(w.to(device), centre.to(device))
    return f"head started from the backbone's features (whitened PCA of {len(store)} train images to {dim} dimensions)"
