"""Projection heads: backbone features -> the embedding (L2 normalisation happens in the model).

Each factory returns a :class:`petkit.interfaces.Head`: the module and its output width, which
the model card records (no dummy forward pass to find it).

Margin heads (ArcFace/CosFace class centres) are not here: they belong to the losses that use
them (petkit.losses.classifier), so the embedding model stays the same, and exportable, for
every loss.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from petkit.interfaces import Head
from petkit.limits import Range
from petkit.registry import HEADS


@HEADS.register("mlp")
def mlp_head(in_features: int, hidden_dim: Annotated[int, Range(1, 65536)] = 512, embedding_dim: Annotated[int, Range(1, 65536)] = 128,
             layers: Annotated[int, Range(1, 64)] = 2, batch_norm: bool = False, dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0) -> Head:
    """MLP projection: (layers - 1) x [Linear, (BN), ReLU, (Dropout)] then Linear (default Linear-ReLU-Linear)."""
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers - 1):
        modules.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
        if batch_norm:
            modules.append(nn.BatchNorm1d(hidden_dim))
        modules.append(nn.ReLU(inplace=True))
        if dropout:
            modules.append(nn.Dropout(dropout))
        width = hidden_dim
    modules.append(nn.Linear(width, embedding_dim))
    head = nn.Sequential(*modules)
    exact = layers == 2 and not batch_norm and hidden_dim >= 2 * embedding_dim
    return Head(head, embedding_dim, (lambda w, centre: _mlp_start_linear(head, w, centre)) if exact else None)


@torch.no_grad()
def _mlp_start_linear(head: nn.Sequential, w: torch.Tensor, centre: torch.Tensor) -> None:
    """Linear -> ReLU -> Linear computing exactly ``w @ (x - centre)``: the first layer holds +w and -w
    (ReLU(z) - ReLU(-z) = z), the second adds the pair back; the hidden units left over keep their
    random weights and start with zero output weights, so they contribute nothing yet but learn."""
    first, last = head[0], head[-1]
    d = w.shape[0]
    first.weight[:d], first.weight[d:2 * d] = w, -w
    first.bias[:d], first.bias[d:2 * d] = -(w @ centre), w @ centre
    last.weight.zero_()
    last.weight[:, :d], last.weight[:, d:2 * d] = torch.eye(d), -torch.eye(d)
    last.bias.zero_()


@torch.no_grad()
def _linear_start_linear(layer: nn.Linear, w: torch.Tensor, centre: torch.Tensor) -> None:
    layer.weight.copy_(w)
    if layer.bias is not None:
        layer.bias.copy_(-(w @ centre))


@HEADS.register("linear")
def linear_head(in_features: int, embedding_dim: Annotated[int, Range(1, 65536)] = 128) -> Head:
    """A single linear projection."""
    layer = nn.Linear(in_features, embedding_dim)
    return Head(layer, embedding_dim, lambda w, centre: _linear_start_linear(layer, w, centre))


@HEADS.register("identity")
def identity_head(in_features: int) -> Head:
    """No projection: the pooled backbone features are the embedding."""
    return Head(nn.Identity(), in_features)


class BNNeck(nn.Module):
    """Optional linear reduction, then BatchNorm1d without a learnable shift (Luo et al., 2019).

    The triplet-style loss and the classification loss both see the normalised feature; the
    missing bias keeps the features centred so cosine and Euclidean geometry agree.
    """

    def __init__(self, in_features: int, embedding_dim: int | None):
        super().__init__()
        self.reduce = nn.Linear(in_features, embedding_dim, bias=False) if embedding_dim else nn.Identity()
        self.bn = nn.BatchNorm1d(embedding_dim or in_features)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.reduce(x))


@HEADS.register("bnneck")
def bnneck(in_features: int, embedding_dim: Annotated[int, Range(1, 65536)] | None = None) -> Head:
    """BN-neck: (Linear) + BatchNorm1d with a frozen zero bias, as in strong re-ID baselines."""
    neck = BNNeck(in_features, embedding_dim)

    def start(w: torch.Tensor, centre: torch.Tensor) -> None:  # the batch norm centres; its scale only rescales axes
        with torch.no_grad():
            neck.reduce.weight.copy_(w)

    return Head(neck, embedding_dim or in_features, start if embedding_dim else None)
