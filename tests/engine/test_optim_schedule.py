"""Every registered optimiser and schedule, iterated from the registries."""


import pytest
import torch

from petkit.registry import OPTIMIZERS, SCHEDULES


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_descends(name):
    weight = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    optimizer = OPTIMIZERS.build({"name": name}, params=[{"params": [weight], "weight_decay": 0.0}], lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        weight.pow(2).sum().backward()
        optimizer.step()
    assert weight.detach().abs().max() < 1.0


def run_schedule(spec, epochs=6, steps=4, metrics=None):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = SCHEDULES.build(spec, optimizer=optimizer, steps_per_epoch=steps, epochs=epochs)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        schedule.epoch_end(metrics[epoch] if metrics else None)
    return lrs, schedule, optimizer


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_gives_finite_positive_rates_and_resumes(name):
    lrs, schedule, optimizer = run_schedule({"name": name}, metrics=[0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert all(0 < lr <= 1.0 + 1e-9 for lr in lrs)
    state = schedule.state_dict()
    other = SCHEDULES.build({"name": name}, optimizer=optimizer, steps_per_epoch=4, epochs=6)
    other.load_state_dict(state)
    assert other.lr_factor() == pytest.approx(schedule.lr_factor())


def test_schedule_shapes():
    lrs, *_ = run_schedule({"name": "step", "args": {"step_epochs": 2, "gamma": 0.5}})
    assert lrs[0] == lrs[7] == 1.0 and lrs[8] == 0.5 and lrs[16] == 0.25
    lrs, *_ = run_schedule({"name": "multistep", "args": {"milestones": [1, 4], "gamma": 0.1}})
    assert lrs[3] == 1.0 and lrs[4] == pytest.approx(0.1) and lrs[16] == pytest.approx(0.01)
    lrs, *_ = run_schedule({"name": "cosine_restarts", "args": {"t0": 2, "t_mult": 2, "min_lr_ratio": 0.0}})
    assert lrs[0] == 1.0 and lrs[7] < 0.1 and lrs[8] == 1.0 and lrs[23] < 0.1  # cycles of 2 then 4 epochs
    lrs, *_ = run_schedule({"name": "warmup_cosine", "args": {"warmup_epochs": 1, "min_lr_ratio": 0.1}})
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] < lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=0.02)
    lrs, *_ = run_schedule({"name": "plateau", "args": {"factor": 0.5, "patience": 1}}, metrics=[0.1, 0.3, 0.2, 0.2, 0.2, 0.2])
    # best at epoch 1; epochs 2, 3 do not improve: more than patience=1 -> halve from epoch 4 on
    assert lrs[15] == 1.0 and lrs[16] == 0.5
