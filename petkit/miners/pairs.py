"""Pair miners for pair losses (contrastive): (a1, p, a2, n) = positive pairs (a1, p), negative pairs (a2, n)."""

from __future__ import annotations

from typing import Annotated

import torch

from petkit.errors import PetkitError
from petkit.interfaces import PairMiner
from petkit.limits import Range
from petkit.miners.triplet import label_masks
from petkit.registry import MINERS

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@MINERS.register("all_pairs")
def all_pairs() -> AllPairsMiner:
    """Pair miner: every positive and every negative pair in the batch."""
    return AllPairsMiner()


@MINERS.register("hard_pairs")
def hard_pairs(pos_margin: Annotated[float, Range(0, 4)] = 0.2, neg_margin: Annotated[float, Range(0, 4, low_open=True)] = 0.8) -> HardPairsMiner:
    """Pair miner: positive pairs farther than pos_margin and negative pairs closer than neg_margin."""
    return HardPairsMiner(pos_margin, neg_margin)


@MINERS.register("adjacent_pairs")
def adjacent_pairs() -> AdjacentPairsMiner:
    """Pair miner, Siamese mode: batch items (0, 1), (2, 3), ... are the pairs (the siamese_pairs sampler)."""
    return AdjacentPairsMiner()


class AllPairsMiner(PairMiner):
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Pairs:
        positive, negative = label_masks(labels)
        a1, p = torch.nonzero(positive, as_tuple=True)
        a2, n = torch.nonzero(negative, as_tuple=True)
        return a1, p, a2, n


class HardPairsMiner(PairMiner):
    def __init__(self, pos_margin: float, neg_margin: float):
        self.pos_margin, self.neg_margin = pos_margin, neg_margin

    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Pairs:
        a1, p, a2, n = AllPairsMiner()(distances, labels)
        d = distances.detach()
        hard_positive = d[a1, p] > self.pos_margin
        hard_negative = d[a2, n] < self.neg_margin
        return a1[hard_positive], p[hard_positive], a2[hard_negative], n[hard_negative]


class AdjacentPairsMiner(PairMiner):
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Pairs:
        if len(labels) % 2:
            raise PetkitError(
                f"adjacent_pairs needs an even batch (pairs of items), got {len(labels)}",
                "use it with the siamese_pairs sampler",
            )
        first = torch.arange(0, len(labels), 2, device=labels.device)
        second = first + 1
        same = labels[first] == labels[second]
        return first[same], second[same], first[~same], second[~same]
