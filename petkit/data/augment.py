"""Batched augmentation on the training device.

One random affine warp per image (zoom, shift, rotation, horizontal flip) through a single
``grid_sample`` call, then colour jitter (brightness, contrast, saturation, random
grayscale) as tensor arithmetic. Doing this per batch instead of per image in PIL is what
lets a 2-core machine keep the model busy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from petkit.config import AugmentConfig


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] -> augmented float of the same shape."""
    batch = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator, device="cpu").to(device) * (high - low) + low

    zoom = uniform(config.scale[0], config.scale[1])
    angle = uniform(-config.rotate, config.rotate) * (math.pi / 180)
    flip = torch.ones(batch, device=device)
    if config.hflip:
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-config.shift, config.shift) * 2, uniform(-config.shift, config.shift) * 2
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([
        torch.stack([cos * flip, -sin, tx], dim=1),
        torch.stack([sin * flip, cos, ty], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _jitter(out, config, uniform)


def _jitter(images: torch.Tensor, config: AugmentConfig, uniform) -> torch.Tensor:
    shape = (-1, 1, 1, 1)
    if config.brightness:
        images = images * uniform(1 - config.brightness, 1 + config.brightness).view(shape)
    gray = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
    if config.contrast:
        mean = gray.mean(dim=(2, 3), keepdim=True)
        factor = uniform(1 - config.contrast, 1 + config.contrast).view(shape)
        images, gray = (images - mean) * factor + mean, (gray - mean) * factor + mean
    if config.saturation:
        images = gray + (images - gray) * uniform(1 - config.saturation, 1 + config.saturation).view(shape)
    if config.grayscale_p:
        to_gray = (uniform(0, 1) < config.grayscale_p).view(shape)
        images = torch.where(to_gray, gray.expand_as(images), images)
    return images.clamp_(0.0, 1.0)
