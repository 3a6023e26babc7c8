"""Pair-based losses: contrastive, multi-similarity, supervised contrastive.

All take L2-normalised embeddings. Contrastive works on mined pairs (a pair miner); the other
two weigh every pair of the batch themselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch

from petkit.errors import PetkitError
from petkit.interfaces import Loss
from petkit.limits import NonNegativeFloat, PositiveFloat, Range
from petkit.losses.base import mean_nonzero, pair_distance, zero_loss
from petkit.miners.pairs import AllPairsMiner
from petkit.miners.triplet import label_masks
from petkit.registry import LOSSES


class ContrastiveLoss(Loss):
    """``y * d^2 + (1 - y) * max(0, m - d)^2`` over mined pairs (Hadsell et al., 2006).

    ``squared: false`` drops the squares (pytorch-metric-learning's ContrastiveLoss). With
    ``reduction: nonzero`` the positive and the negative terms are each averaged over their
    non-zero pairs and added (so the many negatives of a P x K batch do not drown the
    positives); ``mean`` averages the per-pair loss over all mined pairs.
    """

    miner_kind = "pair"

    def __init__(self, margin: float, distance: str, squared: bool, reduction: str):
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise PetkitError(f"contrastive distance must be 'euclidean' or 'cosine', got '{distance}'")
        if reduction not in ("nonzero", "mean"):
            raise PetkitError(f"contrastive reduction must be 'nonzero' or 'mean', got '{reduction}'")
        self.margin, self.distance, self.squared, self.reduction = margin, distance, squared, reduction
        self.miner = AllPairsMiner()

    def distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            return 1.0 - (x * y).sum(dim=1)
        return pair_distance(x, y)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        with torch.no_grad():
            matrix = torch.cdist(embeddings, embeddings) if self.distance == "euclidean" else 1.0 - embeddings @ embeddings.T
        a1, p, a2, n = self.miner(matrix, labels)
        power = 2 if self.squared else 1
        positive = self.distances(embeddings[a1], embeddings[p]).pow(power)
        negative = torch.relu(self.margin - self.distances(embeddings[a2], embeddings[n])).pow(power)
        if len(positive) + len(negative) == 0:
            return zero_loss(embeddings)
        if self.reduction == "mean":
            return torch.cat([positive, negative]).mean()
        return mean_nonzero(positive, embeddings) + mean_nonzero(negative, embeddings)


class MultiSimilarityLoss(Loss):
    """Multi-similarity loss (Wang et al., 2019) on cosine similarities S of all pairs:

    ``1/alpha * log(1 + sum_pos exp(-alpha (S - base))) + 1/beta * log(1 + sum_neg exp(beta (S - base)))``
    averaged over anchors. With ``epsilon`` set, only informative pairs count, as in the paper's
    mining step: negatives more similar than the hardest positive minus epsilon, positives less
    similar than the hardest negative plus epsilon.
    """

    def __init__(self, alpha: float, beta: float, base: float, epsilon: float | None):
        super().__init__()
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        similarity = embeddings @ embeddings.T
        positive, negative = label_masks(labels)
        if self.epsilon is not None:
            positive, negative = self._informative(similarity.detach(), positive, negative)
        pos_term = _log1p_sum_exp(-self.alpha * (similarity - self.base), positive) / self.alpha
        neg_term = _log1p_sum_exp(self.beta * (similarity - self.base), negative) / self.beta
        return (pos_term + neg_term).mean()

    def _informative(self, similarity, positive, negative):
        hardest_positive = torch.where(positive, similarity, torch.inf).min(1, keepdim=True).values
        hardest_negative = torch.where(negative, similarity, -torch.inf).max(1, keepdim=True).values
        keep_negative = negative & (similarity + self.epsilon > hardest_positive)
        keep_positive = positive & (similarity - self.epsilon < hardest_negative)
        return keep_positive, keep_negative


def _log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row: log(1 + sum over mask of exp(x)), stably; 0 where the mask is empty."""
    x = x.masked_fill(~mask, -torch.inf)
    with_one = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    return torch.logsumexp(with_one, dim=1)


class SupConLoss(Loss):
    """Supervised contrastive loss (Khosla et al., 2020): per anchor, the mean over its positives
    of ``-log softmax`` of cosine similarity / temperature over all other items; averaged over
    anchors that have a positive."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        positive, negative = label_masks(labels)
        if not positive.any() or not negative.any():
            return zero_loss(embeddings)
        logits = embeddings @ embeddings.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stability only
        others = positive | negative
        log_prob = logits - torch.logsumexp(logits.masked_fill(~others, -torch.inf), dim=1, keepdim=True)
        per_anchor = -(log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)
        return mean_nonzero(per_anchor, embeddings)


@LOSSES.register("contrastive")
def contrastive(margin: Annotated[float, Range(0, 4, low_open=True)] = 1.0, distance: Literal["euclidean", "cosine"] = "euclidean", squared: bool = True,
                reduction: Literal["nonzero", "mean"] = "nonzero") -> ContrastiveLoss:
    """Contrastive loss on positive/negative pairs (pair miner; default all_pairs)."""
    return ContrastiveLoss(margin, distance, squared, reduction)


@LOSSES.register("multi_similarity")
def multi_similarity(alpha: PositiveFloat = 2.0, beta: PositiveFloat = 50.0, base: Annotated[float, Range(-1, 1)] = 0.5,
                     epsilon: NonNegativeFloat | None = 0.1) -> MultiSimilarityLoss:
    """Multi-similarity loss with its own pair mining (epsilon; null = every pair)."""
    return MultiSimilarityLoss(alpha, beta, base, epsilon)


@LOSSES.register("supcon")
def supcon(temperature: Annotated[float, Range(0.001, 100)] = 0.1) -> SupConLoss:
    """Supervised contrastive loss over every pair of the batch."""
    return SupConLoss(temperature)


