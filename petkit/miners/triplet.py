"""Triplet miners: (anchor, positive, negative) index triples from a labelled batch.

Miners see a distance matrix and the labels; they never compute gradients, so losses stay
the single place where the maths of the objective lives.
"""

from __future__ import annotations

import torch

from petkit.registry import MINERS

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


@MINERS.register("batch_all")
def batch_all() -> BatchAllMiner:
    """Every valid (a, p, n) triple in the batch."""
    return BatchAllMiner()


@MINERS.register("batch_hard")
def batch_hard() -> BatchHardMiner:
    """Per anchor: its farthest positive and its nearest negative (Hermans et al., 2017)."""
    return BatchHardMiner()


class BatchAllMiner:
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
        positive, negative = _masks(labels)
        valid = positive[:, :, None] & negative[:, None, :]
        a, p, n = torch.nonzero(valid, as_tuple=True)
        return a, p, n


class BatchHardMiner:
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
        positive, negative = _masks(labels)
        usable = positive.any(1) & negative.any(1)
        d = distances.detach()
        hardest_p = torch.where(positive, d, torch.full_like(d, -torch.inf)).argmax(1)
        hardest_n = torch.where(negative, d, torch.full_like(d, torch.inf)).argmin(1)
        anchors = torch.nonzero(usable, as_tuple=True)[0]
        return anchors, hardest_p[anchors], hardest_n[anchors]
