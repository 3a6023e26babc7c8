"""A weighted sum of losses from the config, e.g. cross-entropy + 0.005 * center loss::

    loss:
      name: sum
      args:
        losses:
          - {name: cross_entropy, args: {label_smoothing: 0.1}, weight: 1.0}
          - {name: center, weight: 0.005}
"""

from __future__ import annotations

import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.interfaces import Loss, Miner
from petkit.registry import LOSSES


class WeightedSumLoss(Loss):
    """Declares what its parts declare: fakes if any part uses them, the first part's classifier,
    and the miner kind its mining parts share (a configured miner goes to each of them)."""

    def __init__(self, parts: list[Loss], weights: list[float], names: list[str]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.weights = weights
        self.names = names
        self.needs_fake = any(part.needs_fake for part in parts)
        classifiers = [part.classifier for part in parts if part.classifier is not None]
        if classifiers:
            self.classifier = classifiers[0]  # closed-set accuracy from the first classifying part
        kinds = {part.miner_kind for part in parts} - {None}
        self.miner_kind = kinds.pop() if len(kinds) == 1 else None
        self._mixed = len(kinds) > 0  # parts mine with different kinds: each keeps its own default miner

    def use_miner(self, miner: Miner) -> None:
        if self._mixed:
            raise PetkitError(f"loss 'sum' mixes parts that mine triplets and pairs: one miner ({type(miner).__name__}) cannot serve both",
                              "drop --miner (each part keeps its default), or sum parts of one kind")
        super().use_miner(miner)
        for part in self.parts:
            if part.miner_kind is not None:
                part.use_miner(miner)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, is_fake: torch.Tensor | None = None) -> torch.Tensor:
        return sum(
            weight * part(embeddings, labels, **({"is_fake": is_fake} if part.needs_fake else {}))
            for part, weight in zip(self.parts, self.weights)
        )


@LOSSES.register("sum")
def weighted_sum(losses: list, num_classes: int, embedding_dim: int) -> WeightedSumLoss:
    """Weighted sum of losses: args.losses = [{name, args, weight}, ...]."""
    if not isinstance(losses, list) or not losses:
        raise PetkitError("loss 'sum' needs args.losses: a non-empty list of {name, args, weight}",
                          "e.g. losses: [{name: cross_entropy, weight: 1.0}, {name: center, weight: 0.005}]")
    parts, weights, names = [], [], []
    for i, spec in enumerate(losses):
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "args", "weight"}:
            raise PetkitError(f"loss 'sum': losses[{i}] must be {{name, args, weight}}, got {spec!r}")
        if spec["name"] == "sum":
            raise PetkitError("loss 'sum' cannot contain another 'sum'", "list all the parts in one sum")
        parts.append(LOSSES.build({"name": spec["name"], "args": spec.get("args") or {}},
                                  num_classes=num_classes, embedding_dim=embedding_dim))
        weights.append(float(spec.get("weight", 1.0)))
        names.append(spec["name"])
    return WeightedSumLoss(parts, weights, names)
