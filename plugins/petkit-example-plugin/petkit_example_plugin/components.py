"""Components exposed to petkit through entry points (see pyproject.toml)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from petkit.interfaces import Backbone, Loss
from petkit.models.backbones import IMAGENET_MEAN, IMAGENET_STD


def tiny_cnn(width: int = 32, stages: int = 4) -> Backbone:
    """A small from-scratch CNN: conv-BN-ReLU stages with stride 2, global average pooling."""
    layers, channels = [], 3
    for i in range(stages):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Backbone(nn.Sequential(*layers), channels, IMAGENET_MEAN, IMAGENET_STD)


class CosineLogits(nn.Module):
    """cos(embedding, class centre) for every class."""

    def __init__(self, num_classes: int, embedding_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))


class NormSoftmaxLoss(Loss):
    """A loss meets petkit.interfaces.Loss: subclassing it gives the declarations (needs_fake = False,
    miner_kind = None); a classification loss sets ``classifier`` so training reports accuracy."""

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature
        self.classifier = CosineLogits(num_classes, embedding_dim)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(embeddings) / self.temperature, labels)


def normsoftmax(num_classes: int, embedding_dim: int, temperature: float = 0.05) -> NormSoftmaxLoss:
    """Cosine softmax with a temperature over the training identities (NormFace)."""
    return NormSoftmaxLoss(num_classes, embedding_dim, temperature)
