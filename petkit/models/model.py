"""EmbeddingModel: RGB in [0, 1] -> L2-normalised embedding.

Normalisation by mean/std lives inside the model, so a checkpoint or an ONNX file needs only
"resize to image_size, scale to [0, 1]" from whoever feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from petkit.config import ModelConfig
from petkit.models.backbones import build_backbone
from petkit.registry import HEADS


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "input": "RGB float32 NCHW in [0, 1], resized to image_size x image_size"}


class EmbeddingModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, mean, std, embedding_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.embedding_dim = embedding_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone((images - self.mean) / self.std)
        return F.normalize(self.head(features).float(), dim=1)


def build_model(config: ModelConfig, image_size: int, mean=None, std=None) -> tuple[EmbeddingModel, Preprocessing]:
    backbone = build_backbone(config.backbone)
    head = HEADS.build(config.head, in_features=backbone.num_features)
    with torch.no_grad():
        was_training = head.training
        embedding_dim = int(head.eval()(torch.zeros(1, backbone.num_features)).shape[1])
        head.train(was_training)
    preprocessing = Preprocessing(
        image_size, tuple(mean or backbone.mean), tuple(std or backbone.std)
    )
    model = EmbeddingModel(backbone.module, head, preprocessing.mean, preprocessing.std, embedding_dim)
    return model, preprocessing
