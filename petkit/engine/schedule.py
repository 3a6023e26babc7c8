"""Learning-rate schedules, stepped once per optimiser step.

Every schedule is a factor on each parameter group's base learning rate, computed from the
fractional epoch ``t = step / steps_per_epoch``; an optional linear warmup multiplies any of
them. ``plateau`` also listens to the validation metric at each epoch end. One class instead
of torch's scheduler zoo keeps warmup, resume (``state_dict``) and per-batch stepping uniform.

Why not timm's schedulers (``timm.scheduler``): they are driven by two calls (``step(epoch)`` and
``step_update(num_updates)``) with warmup counted in epochs or updates depending on a flag, and
their plateau scheduler wraps torch's ``ReduceLROnPlateau``, which cannot combine with warmup or
resume its own step count; here every schedule is one factor of the fractional epoch, stepped per
optimiser step, with one ``state_dict`` (the accumulation and resume tests rely on it).
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Sequence

import torch

from petkit.limits import AT_LEAST_ONE, FRACTION, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from petkit.registry import SCHEDULES

Factor = Callable[[float], float]


class Schedule:
    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, factor: Factor, warmup_epochs: float = 0.0):
        self.optimizer = optimizer
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.factor = factor
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps = 0
        self.scale = 1.0  # multiplied down by plateau
        self._apply()

    def lr_factor(self) -> float:
        warm = (self.steps + 1) / (self.warmup_steps + 1) if self.steps < self.warmup_steps else 1.0
        return warm * self.scale * self.factor(self.steps / self.steps_per_epoch)

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def epoch_end(self, metric: float | None) -> None:
        """Called after validation; only metric-driven schedules use it."""

    def _apply(self) -> None:
        factor = self.lr_factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict:
        return {"steps": self.steps, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.scale = int(state["steps"]), float(state["scale"])
        self._apply()


class PlateauSchedule(Schedule):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without a better metric."""

    def __init__(self, optimizer, steps_per_epoch: int, factor: float, patience: int, min_lr_ratio: float, warmup_epochs: float):
        self.reduce_by, self.patience, self.min_ratio = factor, patience, min_lr_ratio
        self.best: float | None = None
        self.bad_epochs = 0
        super().__init__(optimizer, steps_per_epoch, lambda t: 1.0, warmup_epochs)

    def epoch_end(self, metric: float | None) -> None:
        if metric is None or math.isnan(metric):
            return
        if self.best is None or metric > self.best:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale = max(self.min_ratio, self.scale * self.reduce_by)
            self.bad_epochs = 0
            self._apply()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        super().load_state_dict(state)


def _cosine(progress: float, min_ratio: float) -> float:
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: NonNegativeFloat = 1.0,
                  min_lr_ratio: Annotated[float, FRACTION] = 0.01) -> Schedule:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at the last step."""
    warm = min(warmup_epochs, max(0.0, epochs - 1 / max(1, steps_per_epoch)))
    return Schedule(optimizer, steps_per_epoch, lambda t: _cosine((t - warm) / max(1e-9, epochs - warm), min_lr_ratio), warm)


@SCHEDULES.register("cosine")
def cosine(optimizer, steps_per_epoch: int, epochs: int, min_lr_ratio: Annotated[float, FRACTION] = 0.01) -> Schedule:
    """Cosine decay from lr to min_lr_ratio * lr over the run, no warmup."""
    return Schedule(optimizer, steps_per_epoch, lambda t: _cosine(t / max(1, epochs), min_lr_ratio))


@SCHEDULES.register("cosine_restarts")
def cosine_restarts(optimizer, steps_per_epoch: int, t0: PositiveFloat = 10.0, t_mult: Annotated[int, Range(1, 100)] = 1,
                    min_lr_ratio: Annotated[float, FRACTION] = 0.01, warmup_epochs: NonNegativeFloat = 0.0) -> Schedule:
    """SGDR: cosine cycles of t0 epochs, each t_mult times longer than the last, restarting at lr."""

    def factor(t: float) -> float:
        length = t0
        while t >= length:
            t -= length
            length *= t_mult
        return _cosine(t / length, min_lr_ratio)

    return Schedule(optimizer, steps_per_epoch, factor, warmup_epochs)


@SCHEDULES.register("step")
def step(optimizer, steps_per_epoch: int, step_epochs: PositiveInt = 10, gamma: Annotated[float, Range(0, 1, low_open=True)] = 0.1,
         warmup_epochs: NonNegativeFloat = 0.0) -> Schedule:
    """Multiply lr by gamma every step_epochs epochs."""
    return Schedule(optimizer, steps_per_epoch, lambda t: gamma ** int(t // step_epochs), warmup_epochs)


@SCHEDULES.register("multistep")
def multistep(optimizer, steps_per_epoch: int, milestones: Annotated[Sequence[int], AT_LEAST_ONE] = (10, 20),
              gamma: Annotated[float, Range(0, 1, low_open=True)] = 0.1, warmup_epochs: NonNegativeFloat = 0.0) -> Schedule:
    """Multiply lr by gamma at each milestone epoch."""
    marks = sorted(int(m) for m in milestones)
    return Schedule(optimizer, steps_per_epoch, lambda t: gamma ** sum(t >= m for m in marks), warmup_epochs)


@SCHEDULES.register("plateau")
def plateau(optimizer, steps_per_epoch: int, factor: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.1,
            patience: NonNegativeInt = 2, min_lr_ratio: Annotated[float, FRACTION] = 0.001, warmup_epochs: NonNegativeFloat = 0.0) -> PlateauSchedule:
    """Multiply lr by factor when the validation metric stalls for more than patience epochs."""
    return PlateauSchedule(optimizer, steps_per_epoch, factor, patience, min_lr_ratio, warmup_epochs)


@SCHEDULES.register("constant")
def constant(optimizer, steps_per_epoch: int, warmup_epochs: NonNegativeFloat = 0.0) -> Schedule:
    """A fixed learning rate (after an optional warmup)."""
    return Schedule(optimizer, steps_per_epoch, lambda t: 1.0, warmup_epochs)
