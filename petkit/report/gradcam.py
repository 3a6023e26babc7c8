"""Grad-CAM for an embedding model: which part of each image made two photos look alike.

The target is the cosine similarity of a query and its top match, not a class logit: for the
query's map the match's embedding is held fixed (and the other way round), the gradient of the
similarity with respect to the last 4-D feature map of the backbone weights its channels
(Selvaraju et al., 2017), and the ReLU of the weighted sum, upsampled to the image, is the map.

An own implementation with hooks rather than the ``grad-cam`` package: that package targets
class outputs through its own model wrapper and pulls in opencv-python-headless, ttach and tqdm;
here the target is a similarity of two embeddings and the upsampling is torch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from petkit.errors import PetkitError
from petkit.models.model import EmbeddingModel


class _LastFeatureMap:
    """Records the last 4-D output with more than one position of any module of the backbone during a forward
    pass: the last convolutional stage (a global pool's 1 x 1 output carries no 'where')."""

    def __init__(self, module: torch.nn.Module):
        self.output: torch.Tensor | None = None
        self.handles = [m.register_forward_hook(self._hook) for m in module.modules() if m is not module]

    def _hook(self, module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.requires_grad and output.shape[2] * output.shape[3] > 1:
            self.output = output
            output.retain_grad()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _cam(model: EmbeddingModel, image: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """[H, W] in [0, 1]: where ``image`` (float [3, H, W] in [0, 1]) drives its similarity to the fixed embedding ``other``."""
    recorder = _LastFeatureMap(model.backbone)
    try:
        with torch.enable_grad():
            batch = image.unsqueeze(0).clone().requires_grad_(True)
            embedding = model(batch)
            if recorder.output is None:
                raise PetkitError("Grad-CAM found no 4-D feature map in the backbone", "Grad-CAM needs a convolutional backbone")
            similarity = (embedding[0] * other).sum()
            model.zero_grad(set_to_none=True)
            similarity.backward()
            features, grads = recorder.output, recorder.output.grad
    finally:
        recorder.close()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).detach()


def similarity_cams(model: EmbeddingModel, query: torch.Tensor, match: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(query map, match map) for the similarity of two uint8 [3, H, W] images, each map [H, W] in [0, 1]."""
    model = model.float().eval()
    q, m = query.float() / 255.0, match.float() / 255.0
    with torch.no_grad():
        fixed = model(torch.stack([q, m]))
    return _cam(model, q, fixed[1]), _cam(model, m, fixed[0])
