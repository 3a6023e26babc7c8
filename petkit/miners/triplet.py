"""Triplet miners: (anchor, positive, negative) index triples from a labelled batch.

Miners see a distance matrix and the labels; they never compute gradients, so losses stay
the single place where the maths of the objective lives. ``kind`` tells a loss what a miner
returns: ``"triplet"`` (a, p, n) or ``"pair"`` (a1, p, a2, n) (petkit.interfaces.TripletMiner / PairMiner).
"""

from __future__ import annotations

from typing import Annotated

import torch

from petkit.interfaces import TripletMiner
from petkit.limits import Range
from petkit.registry import MINERS

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean matrices; an item is never its own positive."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


@MINERS.register("batch_all")
def batch_all() -> BatchAllMiner:
    """Triplet miner: every valid (a, p, n) triple in the batch."""
    return BatchAllMiner()


@MINERS.register("batch_hard")
def batch_hard() -> BatchHardMiner:
    """Triplet miner: per anchor, its farthest positive and its nearest negative (Hermans et al., 2017)."""
    return BatchHardMiner()


@MINERS.register("batch_semi_hard")
def batch_semi_hard(margin: Annotated[float, Range(0, 4, low_open=True, hint="use the triplet loss's margin, e.g. 0.2")] = 0.2) -> BatchSemiHardMiner:
    """Triplet miner: triples whose negative is farther than the positive but within the margin (FaceNet)."""
    return BatchSemiHardMiner(margin)


class BatchAllMiner(TripletMiner):
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
        positive, negative = label_masks(labels)
        valid = positive[:, :, None] & negative[:, None, :]
        a, p, n = torch.nonzero(valid, as_tuple=True)
        return a, p, n


class BatchHardMiner(TripletMiner):
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
        positive, negative = label_masks(labels)
        usable = positive.any(1) & negative.any(1)
        d = distances.detach()
        hardest_p = torch.where(positive, d, torch.full_like(d, -torch.inf)).argmax(1)
        hardest_n = torch.where(negative, d, torch.full_like(d, torch.inf)).argmin(1)
        anchors = torch.nonzero(usable, as_tuple=True)[0]
        return anchors, hardest_p[anchors], hardest_n[anchors]


class BatchSemiHardMiner(TripletMiner):
    def __init__(self, margin: float):
        self.margin = margin

    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
        a, p, n = BatchAllMiner()(distances, labels)
        d = distances.detach()
        gap = d[a, n] - d[a, p]  # > 0: the negative is already farther than the positive
        keep = (gap > 0) & (gap <= self.margin)
        return a[keep], p[keep], n[keep]
