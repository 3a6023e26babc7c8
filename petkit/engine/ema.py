"""Exponential moving average of model weights (Polyak averaging).

The average is what gets validated and saved: it is usually a little better and much less
noisy from epoch to epoch than the raw weights, which matters when the best epoch is picked.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from petkit.errors import PetkitError


class ModelEma:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise PetkitError(f"train.ema_decay must be in (0, 1), got {decay}", "typical values: 0.99 - 0.9999")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # short runs: ramp the decay up so the average is not dominated by the random init
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
