"""Backbones: feature extractors that map images to one pooled vector.

A backbone factory returns a :class:`Backbone`: the module, its feature width, and the input
statistics its weights expect. ``timm`` wraps any timm model by name; random init is the
default (this project is often run offline), ``pretrained: true`` downloads from the hub and
``weights: path`` loads a local file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.registry import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    module: nn.Module
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@BACKBONES.register("timm")
def timm_backbone(model: str = "resnet18", pretrained: bool = False, weights: str | None = None, drop_path_rate: float = 0.0) -> Backbone:
    """Any timm model as a pooled feature extractor (``model`` is a timm name)."""
    if not timm.is_model(model):
        import difflib

        close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
        raise PetkitError(
            f"unknown timm model '{model}'" + (f"; did you mean {', '.join(close)}?" if close else ""),
            "list the names with: python -c \"import timm; print(timm.list_models('*resnet*'))\"",
        )
    kwargs = {"num_classes": 0}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        module = timm.create_model(model, pretrained=pretrained and weights is None, **kwargs)
    except Exception as exc:  # hub/network errors come in many types
        if not pretrained:
            raise
        raise PetkitError(
            f"could not fetch pretrained weights for '{model}': {type(exc).__name__}: {exc}",
            "without internet, download the weights elsewhere and set model.backbone.args.weights: /path/to/file",
        ) from exc
    if weights is not None:
        load_weights(module, Path(weights), model)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return Backbone(module, int(module.num_features), mean, std)


def load_weights(module: nn.Module, path: Path, model_name: str) -> None:
    """Load a local state dict (a timm/torchvision file or a bare state dict); heads are skipped."""
    if not path.is_file():
        raise PetkitError(f"backbone weights not found: {path}", "set model.backbone.args.weights to an existing file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PetkitError(f"cannot read backbone weights {path}: {exc}", "pass a .pth/.pt/.safetensors state dict") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if not usable or len(missing) > len(own) // 2:
        raise PetkitError(
            f"weights {path} do not fit timm model '{model_name}' ({len(usable)} of {len(own)} tensors match)",
            "check that the file was saved from the same architecture",
        )
    module.load_state_dict(usable, strict=False)


def build_backbone(spec) -> Backbone:
    backbone = BACKBONES.build(spec)
    if not isinstance(backbone, Backbone):
        raise PetkitError(
            f"backbone '{spec.name}' returned {type(backbone).__name__}, not petkit.models.backbones.Backbone",
            "a backbone factory must return Backbone(module, num_features, mean, std)",
        )
    return backbone
