"""Optimisers, built from parameter groups the trainer prepares (decay / no decay / per-module lr)."""

from __future__ import annotations

from typing import Annotated, Sequence

import torch

from petkit.errors import PetkitError
from petkit.limits import Range
from petkit.registry import OPTIMIZERS

BETAS = Range(0, 1, high_open=True)
EPS = Range(0, 1, low_open=True)


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float, betas: Annotated[Sequence[float], BETAS] = (0.9, 0.999), eps: Annotated[float, EPS] = 1e-8) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("adam")
def adam(params, lr: float, betas: Annotated[Sequence[float], BETAS] = (0.9, 0.999), eps: Annotated[float, EPS] = 1e-8) -> torch.optim.Optimizer:
    """Adam (weight decay added to the gradient, L2 style)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov by default)."""
    if nesterov and momentum <= 0:
        raise PetkitError("sgd: nesterov needs momentum > 0", "set optim.optimizer.args.momentum: 0.9 or nesterov: false")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)
