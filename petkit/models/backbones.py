"""Backbones: feature extractors that map images to one pooled vector.

A backbone factory returns a :class:`Backbone`: the module, its feature width, and the input
statistics its weights expect. ``timm`` wraps any timm model by name; ``pretrained: auto`` (the
run config's default) takes hub or cached weights when they can be had and random ones otherwise,
``pretrained: true`` requires them, ``weights: path`` loads a local file. The factory's own default
stays ``false``: a model rebuilt from a checkpoint's card never reaches for the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import timm
import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.interfaces import Backbone
from petkit.limits import Range
from petkit.registry import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["Backbone", "IMAGENET_MEAN", "IMAGENET_STD", "build_backbone"]


@BACKBONES.register("timm")
def timm_backbone(model: str = "resnet18", pretrained: bool | Literal["auto"] = False, weights: str | None = None,
                  drop_path_rate: Annotated[float, Range(0, 1, high_open=True)] = 0.0, pool: Literal["avg", "gem"] = "avg",
                  freeze_stages: Annotated[int, Range(0, 16)] = 0) -> Backbone:
    """Any timm model as a pooled feature extractor (``model``: a timm name, ``timm/NAME`` or ``hf-hub:ORG/NAME``).

    ``pretrained``: true fetches the weights (hub or cache) or fails; ``auto`` (the run config's default)
    fetches them when they can be had and otherwise starts from random weights, saying so in
    ``Backbone.initialisation``; ``weights: FILE`` loads a local file instead. GeM pooling, frozen stages.
    """
    model = timm_model_name(model)
    if pool not in ("avg", "gem"):
        raise PetkitError(f"timm backbone pool must be 'avg' or 'gem', got '{pool}'")
    if pretrained not in (True, False, "auto"):
        raise PetkitError(f"timm backbone pretrained must be true, false or auto, got {pretrained!r}")
    kwargs = {"num_classes": 0}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    fetch = bool(pretrained) and weights is None  # True or "auto"
    if fetch or model.startswith("hf-hub:"):  # a hub name fetches its config even untrained
        module, initialisation = _fetch(model, pretrained, fetch, kwargs)
    else:
        module, initialisation = timm.create_model(model, pretrained=False, **kwargs), "random"
    if weights is not None:
        load_weights(module, Path(weights), model)
        initialisation = f"weights file {weights}"
    freeze_first_stages(module, freeze_stages, model)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    loaded = not initialisation.startswith("random")
    input_size = cfg.get("input_size")
    size = int(input_size[-1]) if loaded and input_size else None  # the size the weights were trained at
    if pool == "gem":
        return Backbone(GeMFeatures(module), int(module.num_features), mean, std, size, loaded, initialisation)
    # some heads (MobileNetV3) add a hidden layer after pooling: that is the output width then
    width = getattr(module, "head_hidden_size", None) or module.num_features
    return Backbone(module, int(width), mean, std, size, loaded, initialisation)


def _fetch(model: str, pretrained, fetch: bool, kwargs: dict) -> tuple[nn.Module, str]:
    """The timm model with hub/cache weights; with ``pretrained: auto`` a failure falls back to random weights."""
    reachable = go_offline_when_unreachable()
    rng = torch.random.get_rng_state()  # a failed fetch has drawn a random init already: the fallback draws the same one
    try:
        module = timm.create_model(model, pretrained=fetch, **kwargs)
        tag = (getattr(module, "pretrained_cfg", {}) or {}).get("hf_hub_id") or model
        return module, (f"pretrained {tag}" if fetch else "random")
    except Exception as exc:  # hub/network errors come in many types
        why = ("the Hugging Face Hub cannot be reached and the files are not in the local cache" if not reachable
               else f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
        if pretrained == "auto" and not model.startswith("hf-hub:"):
            torch.random.set_rng_state(rng)
            return timm.create_model(model, pretrained=False, **kwargs), f"random (pretrained weights for '{model}' unavailable: {why})"
        raise PetkitError(
            f"could not fetch '{model}' from the hub: {why}",
            "without internet, download the weights elsewhere and set model.backbone.args.weights: /path/to/file",
        ) from exc


class GeM(nn.Module):
    """Generalised mean pooling (Radenovic et al., 2018): (mean x^p)^(1/p) with a learnable p;
    p = 1 is average pooling, large p approaches max pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeMFeatures(nn.Module):
    """A timm model's feature map, GeM-pooled."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.pool = GeM()
        self.num_features = model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        if features.ndim != 4:
            raise PetkitError(f"GeM pooling needs a convolutional feature map, got shape {tuple(features.shape)}",
                              "use pool: avg for transformer backbones")
        return self.pool(features)


def go_offline_when_unreachable(timeout: float = 3.0) -> bool:
    """Probe the hub once; when it cannot be reached, switch huggingface_hub to offline mode for this
    process (cached weights still load, missing ones fail at once). Measured without a network: 53 s
    of retries and warnings before the error, now a 3 s probe. Returns whether the hub is reachable."""
    import socket
    from urllib.parse import urlparse

    try:
        import huggingface_hub.constants as hub
    except ImportError:
        return False
    if hub.HF_HUB_OFFLINE:
        return False
    host = urlparse(hub.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        hub.HF_HUB_OFFLINE = True  # read by huggingface_hub at each call, as the HF_HUB_OFFLINE variable sets it
        return False


def timm_model_name(model: str) -> str:
    """The name timm's factory takes: ``timm/NAME`` (the hub's timm organisation) -> ``hf-hub:timm/NAME``;
    a source-prefixed name (``hf-hub:ORG/NAME``, ``local-dir:PATH``) as it is; anything else must be a
    registered timm architecture (``timm.is_model`` knows only those, not hub names)."""
    from timm.models._factory import parse_model_name

    if model.startswith("timm/"):
        model = f"hf-hub:{model}"
    try:
        source, _ = parse_model_name(model)
    except ValueError as exc:
        raise PetkitError(f"timm model '{model}': {exc}", "write hub models as hf-hub:ORG/NAME or timm/NAME") from exc
    if source is None and not timm.is_model(model):
        import difflib

        close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
        raise PetkitError(
            f"unknown timm model '{model}'" + (f"; did you mean {', '.join(close)}?" if close else ""),
            "list the names with: python -c \"import timm; print(timm.list_models('*resnet*'))\", or use hf-hub:ORG/NAME",
        )
    return model


def stage_names(module: nn.Module) -> list[str]:
    """Names of the backbone's stages in forward order (those that own parameters)."""
    if hasattr(module, "feature_info"):
        names = [info["module"] for info in module.feature_info]
    elif hasattr(module, "stages"):
        names = [f"stages.{i}" for i in range(len(module.stages))]
    else:
        return []
    return [n for n in names if any(True for _ in module.get_submodule(n).parameters())]


def freeze_first_stages(module: nn.Module, count: int, model_name: str) -> None:
    """Freeze the stem and the first ``count`` stages: no gradients, batch norms in inference mode."""
    if count == 0:
        return
    stages = stage_names(module)
    if not 0 < count <= len(stages):
        raise PetkitError(f"freeze_stages={count} but '{model_name}' has {len(stages)} stages ({', '.join(stages)})",
                          f"use 0..{len(stages)}")
    names = [name for name, _ in module.named_parameters()]
    last_stage = stages[count - 1] + "."
    end = max(i for i, name in enumerate(names) if name.startswith(last_stage))
    owners = sorted({name.rsplit(".", 1)[0] for name in names[: end + 1] if "." in name})
    from timm.utils.model import freeze

    freeze(module, owners)  # also swaps their BatchNorm2d for FrozenBatchNorm2d


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
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PetkitError(f"{path} holds no state dict of tensors", "pass a .pth/.pt/.safetensors state dict")
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if not usable or len(missing) > len(own) // 2:
        usable = remap_in_order(state, module, path, model_name)  # other key names (another implementation's file)
    module.load_state_dict(usable, strict=False)


def remap_in_order(state: dict[str, torch.Tensor], module: nn.Module, path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """A state dict whose names differ from timm's but whose tensors line up in order (e.g. the
    EfficientNet-Lite0 weights of another implementation): checked tensor by tensor, then renamed by
    timm's ``remap_state_dict``. Extra tensors at the end of the file (a classifier head) are left out."""
    from timm.models._helpers import remap_state_dict

    own = module.state_dict()
    if len(state) < len(own):
        raise PetkitError(f"weights {path} hold {len(state)} tensors, timm model '{model_name}' has {len(own)}; their names differ "
                          "too, so they cannot be matched", "check that the file was saved from the same architecture")
    for position, ((name, tensor), (theirs, value)) in enumerate(zip(own.items(), state.items())):
        if tensor.shape != value.shape:
            raise PetkitError(f"weights {path} do not line up with timm model '{model_name}': tensor {position} is {theirs} "
                              f"{tuple(value.shape)} in the file but {name} {tuple(tensor.shape)} in the model",
                              "the file's tensors must follow the model's order (same architecture, same variant)")
    return remap_state_dict(dict(list(state.items())[: len(own)]), module, allow_reshape=False)


def build_backbone(spec) -> Backbone:
    """The backbone of a ``{name, args}`` spec (the registry checks it is a Backbone)."""
    return BACKBONES.build(spec)
