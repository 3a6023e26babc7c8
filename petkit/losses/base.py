"""What every loss shares: distances and the miner contract.

A loss is an ``nn.Module`` called as ``loss(embeddings, labels)`` with L2-normalised float32
embeddings. Optional class attributes tell the trainer what else it needs:

- ``needs_fake = True``: also called with ``is_fake`` (bool per item) from the manifest;
- ``classifier``: a module mapping embeddings to class logits (closed-set accuracy);
- a ``miner`` constructor argument: the trainer builds the configured miner and passes it.
"""

from __future__ import annotations

import torch

from petkit.errors import PetkitError
from petkit.registry import MINERS


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


def checked_miner(loss_name: str, miner, kind: str, default: str):
    """The loss's miner: the configured one if it returns the right kind, else the default."""
    if miner is None:
        return MINERS.build({"name": default})
    if getattr(miner, "kind", None) != kind:
        names = [n for n in MINERS.names() if getattr(MINERS.build({"name": n}), "kind", None) == kind]
        raise PetkitError(
            f"loss '{loss_name}' needs a {kind} miner, got a {getattr(miner, 'kind', 'unknown')} miner ({type(miner).__name__})",
            f"pass --miner with one of: {', '.join(names)}",
        )
    return miner
