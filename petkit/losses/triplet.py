"""Triplet margin loss over mined triplets, and the real/fake-aware quadruplet loss.

``loss = mean over triplets with loss > 0 of max(0, d(a, p) - d(a, n) + margin)`` with the
Euclidean distance, as pytorch-metric-learning's ``TripletMarginLoss`` with its default
``AvgNonZeroTripletsReducer``. Embeddings come in L2-normalised.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from petkit.interfaces import Loss, Miner
from petkit.limits import Range
from petkit.losses.base import distance_matrix, mean_nonzero, pair_distance, zero_loss
from petkit.miners.triplet import BatchAllMiner
from petkit.registry import LOSSES


class TripletMarginLoss(Loss):
    miner_kind = "triplet"

    def __init__(self, margin: float = 0.2, soft: bool = False, name: str = "triplet"):
        super().__init__()
        self.margin = margin
        self.soft = soft
        self.miner = BatchAllMiner()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        with torch.no_grad():
            distances = distance_matrix(embeddings)
        return self.on_triplets(embeddings, *self.miner(distances, labels))

    def on_triplets(self, embeddings: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if len(a) == 0:  # no identity with two images in the batch: nothing to learn from
            return zero_loss(embeddings)
        gap = pair_distance(embeddings[a], embeddings[p]) - pair_distance(embeddings[a], embeddings[n])
        if self.soft:  # soft-margin variant: log(1 + exp(gap)), no margin to tune
            return nn.functional.softplus(gap).mean()
        return mean_nonzero(torch.relu(gap + self.margin), embeddings)


class QuadrupletLoss(Loss):
    """``triplet(a, p, n) + lambda * triplet(a, p, fake)``.

    Anchors and positives are real images of one identity, ``n`` a real image of another and
    ``fake`` a fake image in the batch: a forgery must sit farther from the anchor than its
    genuine positive, whoever it imitates. Each term is mined with the configured miner.
    """

    needs_fake = True
    miner_kind = "triplet"

    def __init__(self, margin: float = 0.2, fake_margin: float | None = None, fake_weight: float = 1.0):
        super().__init__()
        self.real = TripletMarginLoss(margin, name="quadruplet")
        self.fake = TripletMarginLoss(margin if fake_margin is None else fake_margin, name="quadruplet")
        self.fake_weight = fake_weight
        self.miner = self.real.miner

    def use_miner(self, miner: Miner) -> None:
        super().use_miner(miner)
        self.real.miner = self.fake.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, is_fake: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        is_fake = is_fake.bool()
        # each fake gets a label of its own: it is never a positive, only a negative
        mining_labels = torch.where(is_fake, -1 - torch.arange(len(labels), device=labels.device), labels)
        with torch.no_grad():
            distances = distance_matrix(embeddings)
        real = torch.nonzero(~is_fake, as_tuple=True)[0]
        a, p, n = self.real.miner(distances[real][:, real], mining_labels[real])
        real_term = self.real.on_triplets(embeddings, real[a], real[p], real[n])
        # the fake term mines as if real images of other identities were out of reach,
        # so a hard miner picks the hardest fake, not the hardest negative of any kind
        other_real = ~is_fake[None, :] & (labels[:, None] != labels[None, :])
        a, p, n = self.real.miner(distances.masked_fill(other_real, torch.inf), mining_labels)
        keep = is_fake[n]
        fake_term = self.fake.on_triplets(embeddings, a[keep], p[keep], n[keep])
        return real_term + self.fake_weight * fake_term


@LOSSES.register("triplet")
def triplet(margin: Annotated[float, Range(0, 4)] = 0.2, soft: bool = False) -> TripletMarginLoss:
    """Triplet margin loss on mined triplets (miner from the config; default batch_all)."""
    return TripletMarginLoss(margin=margin, soft=soft)


@LOSSES.register("quadruplet")
def quadruplet(margin: Annotated[float, Range(0, 4)] = 0.2, fake_weight: Annotated[float, Range(0, 100)] = 1.0,
               fake_margin: Annotated[float, Range(0, 4)] | None = None) -> QuadrupletLoss:
    """triplet(a, p, n) + lambda * triplet(a, p, fake), fakes from the manifest's is_fake column."""
    return QuadrupletLoss(margin, fake_margin, fake_weight)
