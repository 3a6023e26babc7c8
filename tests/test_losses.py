"""Losses and miners: parity with pytorch-metric-learning (value and gradient), autocast, edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from petkit.errors import PetkitError
from petkit.registry import LOSSES, MINERS

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")


def batch(n=24, d=16, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    labels = torch.arange(n) % classes
    return x, labels


def value_and_grad(loss_fn, x, labels):
    x = x.clone().requires_grad_(True)
    value = loss_fn(F.normalize(x, dim=1), labels)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("miner, pml_miner", [("batch_all", None), ("batch_hard", "BatchHardMiner")])
def test_triplet_matches_pml(miner, pml_miner):
    x, labels = batch()
    ours = LOSSES.build({"name": "triplet", "args": {"margin": 0.2}}, miner=MINERS.build({"name": miner}))
    theirs = pml_losses.TripletMarginLoss(margin=0.2)
    v1, g1 = value_and_grad(ours, x, labels)
    if pml_miner is None:
        v2, g2 = value_and_grad(theirs, x, labels)
    else:
        mine = getattr(pml_miners, pml_miner)()
        v2, g2 = value_and_grad(lambda e, y: theirs(e, y, mine(e, y)), x, labels)
    assert v1 == pytest.approx(v2.item(), abs=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_arcface_matches_pml():
    x, labels = batch(n=32, d=8, classes=5, seed=1)
    ours = LOSSES.build({"name": "arcface", "args": {"scale": 16.0, "margin": 0.3}}, num_classes=5, embedding_dim=8)
    theirs = pml_losses.ArcFaceLoss(num_classes=5, embedding_size=8, margin=math.degrees(0.3), scale=16.0)
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    v1, g1 = value_and_grad(ours, x, labels)
    v2, g2 = value_and_grad(theirs, x, labels)
    assert v1 == pytest.approx(v2.item(), abs=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_batch_hard_picks_the_hardest_pairs():
    # 1-d points: labels a a b b; anchor 0 at 0.0: positive 1 at 0.5, negatives at 0.6 and 3.0
    points = torch.tensor([[0.0], [0.5], [0.6], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = MINERS.build({"name": "batch_hard"})(torch.cdist(points, points), labels)
    assert a.tolist() == [0, 1, 2, 3]
    assert p.tolist() == [1, 0, 3, 2]
    assert n.tolist() == [2, 2, 1, 1]


def test_batch_all_counts_every_valid_triplet():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    a, p, n = MINERS.build({"name": "batch_all"})(torch.zeros(6, 6), labels)
    # class 0: 3*2 ordered pairs x 3 negatives; class 1: 2 pairs x 4 negatives
    assert len(a) == 6 * 3 + 2 * 4
    assert bool((labels[a] == labels[p]).all()) and bool((labels[a] != labels[n]).all()) and bool((a != p).all())


def test_no_positive_pairs_gives_zero_loss_with_a_gradient_path():
    x = torch.randn(4, 8, requires_grad=True)
    loss = LOSSES.build({"name": "triplet"})(F.normalize(x, dim=1), torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None


@pytest.mark.parametrize("name", ["triplet", "arcface"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_loss_steps_under_cpu_autocast(name, dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    loss_fn = LOSSES.build({"name": name}, num_classes=6, embedding_dim=8, miner=MINERS.build({"name": "batch_all"}))
    x, labels = batch()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        embeddings = F.normalize(layer(x), dim=1)
    loss = loss_fn(embeddings.float(), labels)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_soft_margin_triplet_is_softplus_of_the_gap():
    x, labels = batch()
    e = F.normalize(x, dim=1)
    soft = LOSSES.build({"name": "triplet", "args": {"soft": True}}, miner=MINERS.build({"name": "batch_hard"}))
    a, p, n = MINERS.build({"name": "batch_hard"})(torch.cdist(e, e), labels)
    gap = (e[a] - e[p]).norm(dim=1) - (e[a] - e[n]).norm(dim=1)
    assert soft(e, labels).item() == pytest.approx(F.softplus(gap).mean().item(), abs=1e-6)


def test_invalid_loss_arguments():
    with pytest.raises(PetkitError, match="margin must be"):
        LOSSES.build({"name": "triplet", "args": {"margin": -1}})
    with pytest.raises(PetkitError, match="arcface margin"):
        LOSSES.build({"name": "arcface", "args": {"margin": 2.0}}, num_classes=3, embedding_dim=4)
