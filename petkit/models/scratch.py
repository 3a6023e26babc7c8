"""petkit's own from-scratch backbone families, for small datasets trained without ImageNet weights.

Each is stem -> stages -> pooling, with per-stage ``channels``, ``depths``, ``strides`` and
``dropout`` (a float for every stage or one per stage), Kaiming-initialised:

- ``scratch_resnet``: basic residual blocks (two 3x3 convolutions, projection shortcut);
- ``scratch_convnext``: ConvNeXt blocks (7x7 depthwise, LayerNorm, 4x MLP, layer scale);
- ``scratch_mobilenet``: MobileNetV2 inverted bottlenecks with squeeze-excitation.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Literal, Sequence

import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.limits import Range
from petkit.models.backbones import Backbone, GeM
from petkit.registry import BACKBONES

DROPOUT = Range(0, 1, high_open=True)
CHANNELS, DEPTHS, STRIDES = Range(1, 8192), Range(1, 64), Range(1, 4)  # a crafted card cannot ask for a 100 GB net
HALF = (0.5, 0.5, 0.5)  # no pretrained statistics to match: centre [0, 1] around 0


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, ratio: float):
        super().__init__()
        hidden = max(8, int(channels * ratio))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: float, se_ratio: float):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        if se_ratio > 0:
            layers.append(SqueezeExcite(hidden, se_ratio))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # linear bottleneck: no activation
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class ScratchNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Module], width: int, pool: str):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.pool = GeM() if pool == "gem" else nn.AdaptiveAvgPool2d(1)
        self.num_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x).flatten(1)


def _per_stage(value: float | Sequence[float], stages: int, name: str) -> list[float]:
    values = [float(value)] * stages if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != stages:
        raise PetkitError(f"{name} has {len(values)} entries for {stages} stages", "give one value per stage, or a single number")
    return values


def _check(channels, depths, strides, pool) -> None:
    if not (len(channels) == len(depths) == len(strides)) or not channels:
        raise PetkitError(f"channels {list(channels)}, depths {list(depths)} and strides {list(strides)} must have one entry per stage")
    if pool not in ("avg", "gem"):
        raise PetkitError(f"pool must be 'avg' or 'gem', got '{pool}'")


def _build(stem: nn.Module, stem_out: int, channels, depths, strides, dropout, pool,
           block: Callable[[int, int, int], nn.Module], transition: Callable[[int, int, int], nn.Module] | None = None) -> Backbone:
    _check(channels, depths, strides, pool)
    drops = _per_stage(dropout, len(channels), "dropout")
    stages, cin = [], stem_out
    for cout, depth, stride, drop in zip(channels, depths, strides, drops):
        if transition is not None:  # ConvNeXt: change width/resolution between stages, blocks keep it
            layers = [transition(cin, cout, stride)] + [block(cout, cout, 1) for _ in range(depth)]
        else:
            layers = [block(cin, cout, stride)] + [block(cout, cout, 1) for _ in range(depth - 1)]
        if drop > 0:
            layers.append(nn.Dropout2d(drop))
        stages.append(nn.Sequential(*layers))
        cin = cout
    net = ScratchNet(stem, stages, cin, pool)
    kaiming_init(net)
    return Backbone(net, cin, HALF, HALF)


def kaiming_init(module: nn.Module) -> None:
    """He initialisation by fan-out, counted per group: a depthwise 3x3 convolution has a fan-out of 9,
    not 9 x channels. torch's ``kaiming_normal_(mode="fan_out")`` counts every output channel, which
    shrank each depthwise layer's output by about sqrt(channels): ``scratch_mobilenet``'s features were
    about 1e-8 at initialisation in eval mode and every image embedded to the same vector after an epoch
    (mean val cosine similarity 1.0000, measured)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_stem(out: int, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), act(inplace=True))


@BACKBONES.register("scratch_resnet")
def scratch_resnet(channels: Annotated[Sequence[int], CHANNELS] = (64, 128, 256, 512), depths: Annotated[Sequence[int], DEPTHS] = (2, 2, 2, 2),
                   strides: Annotated[Sequence[int], STRIDES] = (1, 2, 2, 2),
                   stem_channels: Annotated[int, Range(1, 4096)] = 64, dropout: Annotated[float | Sequence[float], DROPOUT] = 0.0,
                   pool: Literal["avg", "gem"] = "avg") -> Backbone:
    """petkit ResNet-style net from scratch (basic blocks; per-stage channels/depths/strides/dropout)."""
    return _build(_conv_stem(stem_channels), stem_channels, channels, depths, strides, dropout, pool, BasicBlock)


@BACKBONES.register("scratch_convnext")
def scratch_convnext(channels: Annotated[Sequence[int], CHANNELS] = (48, 96, 192, 384), depths: Annotated[Sequence[int], DEPTHS] = (2, 2, 4, 2),
                     strides: Annotated[Sequence[int], STRIDES] = (1, 2, 2, 2),
                     stem_channels: Annotated[int, Range(1, 4096)] = 48, dropout: Annotated[float | Sequence[float], DROPOUT] = 0.0,
                     pool: Literal["avg", "gem"] = "avg") -> Backbone:
    """petkit ConvNeXt-style net from scratch (patchify stem, depthwise 7x7 blocks, layer scale)."""
    stem = nn.Sequential(nn.Conv2d(3, stem_channels, 4, 4), ChannelNorm(stem_channels))

    def transition(cin: int, cout: int, stride: int) -> nn.Module:
        if stride == 1 and cin == cout:
            return nn.Identity()
        return nn.Sequential(ChannelNorm(cin), nn.Conv2d(cin, cout, stride, stride) if stride > 1 else nn.Conv2d(cin, cout, 1))

    return _build(stem, stem_channels, channels, depths, strides, dropout, pool, lambda cin, cout, stride: ConvNeXtBlock(cout), transition)


@BACKBONES.register("scratch_mobilenet")
def scratch_mobilenet(channels: Annotated[Sequence[int], CHANNELS] = (16, 24, 40, 80, 160), depths: Annotated[Sequence[int], DEPTHS] = (1, 2, 2, 3, 2),
                      strides: Annotated[Sequence[int], STRIDES] = (1, 2, 2, 2, 1),
                      stem_channels: Annotated[int, Range(1, 4096)] = 32, expand_ratio: Annotated[float, Range(1, 16)] = 6.0,
                      se_ratio: Annotated[float, Range(0, 1)] = 0.25, dropout: Annotated[float | Sequence[float], DROPOUT] = 0.0,
                      pool: Literal["avg", "gem"] = "avg") -> Backbone:
    """petkit MobileNetV2-style net from scratch (inverted bottlenecks + squeeze-excitation)."""
    block = lambda cin, cout, stride: InvertedResidual(cin, cout, stride, expand_ratio, se_ratio)  # noqa: E731
    return _build(_conv_stem(stem_channels, nn.ReLU6), stem_channels, channels, depths, strides, dropout, pool, block)
