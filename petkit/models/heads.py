"""Projection heads: backbone features -> the embedding (L2 normalisation happens in the model)."""

from __future__ import annotations

from torch import nn

from petkit.registry import HEADS


@HEADS.register("mlp")
def mlp_head(in_features: int, hidden_dim: int = 512, embedding_dim: int = 128) -> nn.Module:
    """Linear -> ReLU -> Linear, as in the Siamese face-verification recipe."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, embedding_dim)
    )


@HEADS.register("linear")
def linear_head(in_features: int, embedding_dim: int = 128) -> nn.Module:
    """A single linear projection."""
    return nn.Linear(in_features, embedding_dim)


@HEADS.register("identity")
def identity_head(in_features: int) -> nn.Module:
    """No projection: the pooled backbone features are the embedding."""
    return nn.Identity()
