"""Triplet margin loss over mined triplets.

``loss = mean over triplets with loss > 0 of max(0, d(a, p) - d(a, n) + margin)`` with the
Euclidean distance, as pytorch-metric-learning's ``TripletMarginLoss`` with its default
``AvgNonZeroTripletsReducer``. Embeddings come in L2-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.registry import LOSSES, MINERS


def pair_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # the clamp keeps the gradient of sqrt finite for identical vectors
    return ((x - y) ** 2).sum(dim=1).clamp_min(1e-12).sqrt()


def distance_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    squared = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    return squared.clamp_min(1e-12).sqrt()


class TripletMarginLoss(nn.Module):
    needs_miner = True

    def __init__(self, margin: float = 0.2, miner=None, soft: bool = False):
        super().__init__()
        if margin < 0:
            raise PetkitError(f"triplet margin must be >= 0, got {margin}")
        self.margin = margin
        self.soft = soft
        self.miner = miner or MINERS.build({"name": "batch_all"})

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        with torch.no_grad():
            distances = distance_matrix(embeddings)
        a, p, n = self.miner(distances, labels)
        if len(a) == 0:  # no identity with two images in the batch: nothing to learn from
            return embeddings.sum() * 0.0
        gap = pair_distance(embeddings[a], embeddings[p]) - pair_distance(embeddings[a], embeddings[n])
        if self.soft:  # soft-margin variant: log(1 + exp(gap)), no margin to tune
            return nn.functional.softplus(gap).mean()
        losses = torch.relu(gap + self.margin)
        positive = losses > 0
        return losses[positive].mean() if positive.any() else losses.sum() * 0.0


@LOSSES.register("triplet")
def triplet(margin: float = 0.2, soft: bool = False, miner=None) -> TripletMarginLoss:
    """Triplet margin loss on mined triplets (miner from the config's ``miner``)."""
    return TripletMarginLoss(margin=margin, miner=miner, soft=soft)
