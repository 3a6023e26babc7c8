"""What every loss shares: distances and reductions.

A loss is a :class:`petkit.interfaces.Loss` called as ``loss(embeddings, labels)`` with
L2-normalised float32 embeddings. It declares what else the trainer must give it:
``needs_fake`` (also called with ``is_fake``), ``classifier`` (embeddings -> logits, for
closed-set accuracy) and ``miner_kind`` (the trainer hands it the configured miner through
``use_miner``; the loss keeps its own default otherwise).
"""

from __future__ import annotations

import torch


def pair_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # the clamp keeps the gradient of sqrt finite for identical vectors
    return ((x - y) ** 2).sum(dim=1).clamp_min(1e-12).sqrt()


def distance_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    squared = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt()


def zero_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """0 with a gradient path, for batches that hold nothing to learn from."""
    return embeddings.sum() * 0.0


def mean_nonzero(losses: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over the non-zero terms (PML's AvgNonZero reducers); 0 with a gradient path if none."""
    nonzero = losses > 0
    return losses[nonzero].mean() if nonzero.any() else zero_loss(embeddings)
