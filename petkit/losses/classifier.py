"""Classification-style losses over the training identities, sharing one margin head.

:class:`CosineClassifier` holds the class centres (``sub_centers`` per class) and gives the
cosine of each embedding to each class. ArcFace, CosFace and sub-center ArcFace only differ in
how they change the target logit; plain cross-entropy uses a linear classifier. Every such loss
exposes ``classifier`` so training can report closed-set accuracy. Margin maths runs in float32
outside autocast: the angle formulas lose too much in fp16/bf16.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from petkit.interfaces import Loss
from petkit.limits import Range
from petkit.registry import LOSSES


class CosineClassifier(nn.Module):
    """cos(embedding, class centre); with sub-centres, the closest sub-centre of each class."""

    def __init__(self, num_classes: int, embedding_dim: int, sub_centers: int = 1):
        super().__init__()
        self.num_classes, self.sub_centers = num_classes, sub_centers
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        if self.sub_centers > 1:
            cosine = cosine.view(len(embeddings), self.num_classes, self.sub_centers).max(dim=2).values
        return cosine


class MarginSoftmaxLoss(Loss):
    """Cross-entropy over ``scale * cos`` logits; subclasses define ``target_logit(cosine)``."""

    def __init__(self, num_classes: int, embedding_dim: int, scale: float, sub_centers: int = 1):
        super().__init__()
        self.scale = scale
        self.classifier = CosineClassifier(num_classes, embedding_dim, sub_centers)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.classifier(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        target = F.one_hot(labels, cosine.shape[1]).bool()
        logits = torch.where(target, self.target_logit(cosine), cosine)
        return F.cross_entropy(self.scale * logits, labels)


class ArcFaceLoss(MarginSoftmaxLoss):
    """ArcFace (Deng et al., 2019): the target logit is ``cos(theta + m)``."""

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 30.0, margin: float = 0.3,
                 easy_margin: bool = False, sub_centers: int = 1):
        super().__init__(num_classes, embedding_dim, scale, sub_centers)
        self.margin, self.easy_margin = margin, easy_margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        sine = (1.0 - cosine**2).sqrt()
        with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        if self.easy_margin:
            return torch.where(cosine > 0, with_margin, cosine)
        # beyond pi - m, cos(theta + m) stops decreasing in theta: use a linear penalty there
        threshold = math.cos(math.pi - self.margin)
        return torch.where(cosine > threshold, with_margin, cosine - math.sin(math.pi - self.margin) * self.margin)


class CosFaceLoss(MarginSoftmaxLoss):
    """CosFace / large-margin cosine loss (Wang et al., 2018): the target logit is ``cos(theta) - m``."""

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 30.0, margin: float = 0.35):
        super().__init__(num_classes, embedding_dim, scale)
        self.margin = margin

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.margin


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy with label smoothing over ``scale * cos(embedding, class centre)`` (NormFace).

    The embeddings are L2-normalised, so a plain linear classifier's logits are bounded by its weight
    norms (about 0.6 at initialisation): the softmax stays near uniform and the loss sat at
    ln(identities) for 6-8 epochs (measured: 2.83 = ln 17 on 17 synthetic identities, with center
    loss) while ArcFace learned. A fixed scale on cosine logits (Wang et al., 2017) lets it learn
    from the first step; the argmax, and so the closed-set accuracy, is that of the cosine classifier.
    """

    def __init__(self, num_classes: int, embedding_dim: int, label_smoothing: float = 0.1, scale: float = 16.0):
        super().__init__()
        self.label_smoothing, self.scale = label_smoothing, scale
        self.classifier = CosineClassifier(num_classes, embedding_dim)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scale * self.classifier(embeddings), labels, label_smoothing=self.label_smoothing)


class CenterLoss(Loss):
    """Center loss (Wen et al., 2016): ``1/2 * mean ||x_i - c_{y_i}||^2`` with learnable class
    centres. It only pulls; add it to a classification loss with the ``sum`` loss."""

    def __init__(self, num_classes: int, embedding_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (embeddings.float() - self.centers[labels]).pow(2).sum(dim=1).mean()


ARC_MARGIN = Range(0, math.pi / 2, high_open=True, hint="an angle in radians, e.g. 0.3")


@LOSSES.register("arcface")
def arcface(num_classes: int, embedding_dim: int, scale: Annotated[float, Range(0, 1000, low_open=True)] = 30.0,
            margin: Annotated[float, ARC_MARGIN] = 0.3, easy_margin: bool = False) -> ArcFaceLoss:
    """ArcFace additive angular margin softmax over the training identities (margin in radians)."""
    return ArcFaceLoss(num_classes, embedding_dim, scale, margin, easy_margin)


@LOSSES.register("subcenter_arcface")
def subcenter_arcface(num_classes: int, embedding_dim: int, scale: Annotated[float, Range(0, 1000, low_open=True)] = 30.0,
                      margin: Annotated[float, ARC_MARGIN] = 0.3, sub_centers: Annotated[int, Range(1, 64)] = 3) -> ArcFaceLoss:
    """Sub-center ArcFace: several centres per identity, robust to noisy labels and varied looks."""
    return ArcFaceLoss(num_classes, embedding_dim, scale, margin, sub_centers=sub_centers)


@LOSSES.register("cosface")
def cosface(num_classes: int, embedding_dim: int, scale: Annotated[float, Range(0, 1000, low_open=True)] = 30.0,
            margin: Annotated[float, Range(0, 2)] = 0.35) -> CosFaceLoss:
    """CosFace large-margin cosine softmax over the training identities."""
    return CosFaceLoss(num_classes, embedding_dim, scale, margin)


@LOSSES.register("cross_entropy")
def cross_entropy(num_classes: int, embedding_dim: int, label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.1,
                  scale: Annotated[float, Range(0, 1000, low_open=True)] = 16.0) -> CrossEntropyLoss:
    """Closed-set classification: cosine classifier (logits scale * cos) + cross-entropy with label smoothing."""
    return CrossEntropyLoss(num_classes, embedding_dim, label_smoothing, scale)


@LOSSES.register("center")
def center(num_classes: int, embedding_dim: int) -> CenterLoss:
    """Center loss (pulls embeddings to learnable class centres); combine it with 'sum'."""
    return CenterLoss(num_classes, embedding_dim)
