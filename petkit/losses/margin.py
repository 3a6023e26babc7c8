"""Additive angular margin (ArcFace, Deng et al. 2019).

Logits are ``s * cos(theta + m)`` for the true class and ``s * cos(theta_j)`` otherwise,
followed by cross-entropy. The class centres are learnable parameters of the loss. All maths
runs in float32 outside autocast: ``acos``-style margins overflow in fp16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from petkit.errors import PetkitError
from petkit.registry import LOSSES


class ArcFaceLoss(nn.Module):
    needs_miner = False

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 30.0, margin: float = 0.3, easy_margin: bool = False):
        super().__init__()
        if not 0 <= margin < math.pi / 2:
            raise PetkitError(f"arcface margin must be in [0, pi/2), got {margin}")
        self.scale, self.margin, self.easy_margin = scale, margin, easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
            cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
            sine = (1.0 - cosine**2).sqrt()
            with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
            if self.easy_margin:
                with_margin = torch.where(cosine > 0, with_margin, cosine)
            else:  # beyond pi - m, cos(theta + m) stops being monotonic: use a linear penalty
                threshold = math.cos(math.pi - self.margin)
                with_margin = torch.where(cosine > threshold, with_margin, cosine - math.sin(math.pi - self.margin) * self.margin)
            target = F.one_hot(labels, cosine.shape[1]).bool()
            return self.scale * torch.where(target, with_margin, cosine)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)


@LOSSES.register("arcface")
def arcface(num_classes: int, embedding_dim: int, scale: float = 30.0, margin: float = 0.3, easy_margin: bool = False) -> ArcFaceLoss:
    """ArcFace additive angular margin softmax over the training identities."""
    return ArcFaceLoss(num_classes, embedding_dim, scale, margin, easy_margin)
