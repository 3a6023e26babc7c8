"""Losses and miners: parity with pytorch-metric-learning (value and gradient), every registered
component under fp32 and bf16 autocast, hand-worked cases and edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from petkit.errors import PetkitError
from petkit.registry import LOSSES, MINERS

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")

CLASSES, DIM = 6, 16


def batch(n=24, d=DIM, classes=CLASSES, seed=0, spread=0.8):
    """Clustered points: each class around its own centre, so hard/easy mining decisions vary."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g), labels


def value_and_grad(loss_fn, x, labels, **extra):
    x = x.clone().requires_grad_(True)
    value = loss_fn(F.normalize(x, dim=1), labels, **extra)
    value.backward()
    return value.detach(), x.grad


def assert_same(ours, theirs, x, labels):
    v1, g1 = value_and_grad(ours, x, labels)
    v2, g2 = value_and_grad(theirs, x, labels)
    assert v1.item() > 0
    assert v1.item() == pytest.approx(v2.item(), abs=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def with_miner(loss, miner):
    return lambda e, y: loss(e, y, miner(e, y))


def mined(loss, chosen):
    loss.use_miner(chosen)
    return loss


def miner(name, **args):
    return MINERS.build({"name": name, "args": args})


@pytest.mark.parametrize("name, args, pml", [
    ("batch_all", {}, None),
    ("batch_hard", {}, lambda: pml_miners.BatchHardMiner()),
    ("batch_semi_hard", {"margin": 0.2}, lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
])
def test_triplet_matches_pml(name, args, pml):
    x, labels = batch()
    ours = mined(LOSSES.build({"name": "triplet", "args": {"margin": 0.2}}), miner(name, **args))
    theirs = pml_losses.TripletMarginLoss(margin=0.2)
    assert_same(ours, theirs if pml is None else with_miner(theirs, pml()), x, labels)


@pytest.mark.parametrize("pair_miner, pml", [
    (("all_pairs", {}), None),
    (("hard_pairs", {"pos_margin": 0.6, "neg_margin": 1.3}), lambda: pml_miners.PairMarginMiner(pos_margin=0.6, neg_margin=1.3)),
])
def test_contrastive_matches_pml(pair_miner, pml):
    x, labels = batch(spread=0.5)
    ours = mined(LOSSES.build({"name": "contrastive", "args": {"margin": 1.2, "squared": False}}), miner(pair_miner[0], **pair_miner[1]))
    theirs = pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1.2)
    assert_same(ours, theirs if pml is None else with_miner(theirs, pml()), x, labels)


def test_hard_pairs_drop_easy_pairs():
    x, labels = batch(spread=0.5)
    e = F.normalize(x, dim=1)
    d = torch.cdist(e, e)
    a1, p, a2, n = miner("hard_pairs", pos_margin=0.6, neg_margin=1.3)(d, labels)
    all_a1, _, all_a2, _ = miner("all_pairs")(d, labels)
    assert 0 < len(a1) < len(all_a1) and 0 < len(a2) < len(all_a2)
    assert bool((d[a1, p] > 0.6).all()) and bool((d[a2, n] < 1.3).all())


def test_squared_contrastive_is_the_textbook_formula():
    # two pairs by hand: positive at distance 0.6, negative at distance 0.5, margin 1.0, mean reduction
    e = torch.tensor([[0.0, 0.0], [0.6, 0.0], [5.0, 0.0], [5.5, 0.0]])
    labels = torch.tensor([0, 0, 1, 2])
    loss = mined(LOSSES.build({"name": "contrastive", "args": {"margin": 1.0, "reduction": "mean"}}), miner("adjacent_pairs"))
    # pairs (0, 1): same identity, d = 0.6 -> 0.36; (2, 3): different, d = 0.5 -> (1 - 0.5)^2 = 0.25
    assert loss(e, labels).item() == pytest.approx((0.36 + 0.25) / 2, abs=1e-6)


def test_cosine_contrastive_uses_one_minus_cosine():
    e = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.2]]), dim=1)
    labels = torch.tensor([0, 0, 1, 2])
    loss = mined(LOSSES.build({"name": "contrastive", "args": {"margin": 0.5, "distance": "cosine", "reduction": "mean"}}), miner("adjacent_pairs"))
    d_pos = 1 - math.cos(math.pi / 4)
    d_neg = 1 - float(e[2] @ e[3])
    expected = (d_pos**2 + max(0.0, 0.5 - d_neg) ** 2) / 2
    assert loss(e, labels).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name, ours_args, make_theirs", [
    ("arcface", {"scale": 16.0, "margin": 0.3}, lambda: pml_losses.ArcFaceLoss(CLASSES, DIM, margin=math.degrees(0.3), scale=16.0)),
    ("cosface", {"scale": 16.0, "margin": 0.35}, lambda: pml_losses.CosFaceLoss(CLASSES, DIM, margin=0.35, scale=16.0)),
    ("subcenter_arcface", {"scale": 16.0, "margin": 0.3, "sub_centers": 3},
     lambda: pml_losses.SubCenterArcFaceLoss(num_classes=CLASSES, embedding_size=DIM, margin=math.degrees(0.3), scale=16.0, sub_centers=3)),
])
def test_margin_losses_match_pml(name, ours_args, make_theirs):
    x, labels = batch(n=32, seed=1)
    ours = LOSSES.build({"name": name, "args": ours_args}, num_classes=CLASSES, embedding_dim=DIM)
    theirs = make_theirs()
    with torch.no_grad():
        theirs.W.copy_(ours.classifier.weight.T)  # PML stores centres as columns, grouped by class
    assert_same(ours, theirs, x, labels)


@pytest.mark.parametrize("epsilon", [None, 0.1])
def test_multi_similarity_matches_pml(epsilon):
    x, labels = batch(spread=0.6)
    ours = LOSSES.build({"name": "multi_similarity", "args": {"epsilon": epsilon}})
    theirs = pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    if epsilon is not None:
        theirs = with_miner(theirs, pml_miners.MultiSimilarityMiner(epsilon=epsilon))
    assert_same(ours, theirs, x, labels)


def test_multi_similarity_mining_changes_the_loss():
    x, labels = batch(spread=0.6)
    mined, _ = value_and_grad(LOSSES.build({"name": "multi_similarity", "args": {"epsilon": 0.1}}), x, labels)
    every, _ = value_and_grad(LOSSES.build({"name": "multi_similarity", "args": {"epsilon": None}}), x, labels)
    assert mined.item() != pytest.approx(every.item(), abs=1e-4)


def test_supcon_matches_pml():
    x, labels = batch()
    assert_same(LOSSES.build({"name": "supcon", "args": {"temperature": 0.1}}), pml_losses.SupConLoss(temperature=0.1), x, labels)


def test_cross_entropy_with_label_smoothing_by_hand():
    x, labels = batch()
    loss = LOSSES.build({"name": "cross_entropy", "args": {"label_smoothing": 0.2}}, num_classes=CLASSES, embedding_dim=DIM)
    e = F.normalize(x, dim=1)
    cosine = e @ F.normalize(loss.classifier.weight, dim=1).T  # logits: scale x cosine to the class centres
    log_p = torch.log_softmax(16.0 * cosine, dim=1)
    target = torch.full_like(log_p, 0.2 / CLASSES)
    target[torch.arange(len(labels)), labels] += 0.8
    assert loss(e, labels).item() == pytest.approx(-(target * log_p).sum(1).mean().item(), abs=1e-6)


def test_center_loss_by_hand_and_sum_of_losses():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    center = LOSSES.build({"name": "center"}, num_classes=2, embedding_dim=2)
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # squared distances 0, 1, 1 -> 0.5 * mean = 1/3
    assert center(e, labels).item() == pytest.approx(1 / 3, abs=1e-6)
    total = LOSSES.build({"name": "sum", "args": {"losses": [{"name": "cross_entropy", "weight": 1.0}, {"name": "center", "weight": 0.5}]}},
                         num_classes=2, embedding_dim=2)
    with torch.no_grad():
        total.parts[1].centers.copy_(center.centers)
    expected = total.parts[0](e, labels) + 0.5 * center(e, labels)
    assert total(e, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    assert total.classifier is total.parts[0].classifier


def test_quadruplet_is_triplet_on_reals_plus_lambda_triplet_on_fakes():
    x, labels = batch(n=24)
    is_fake = torch.zeros(24, dtype=torch.bool)
    is_fake[::5] = True  # some fakes, of several identities
    e = F.normalize(x, dim=1)
    quad = LOSSES.build({"name": "quadruplet", "args": {"margin": 0.2, "fake_weight": 0.7}})
    triplet = LOSSES.build({"name": "triplet", "args": {"margin": 0.2}})
    real = torch.nonzero(~is_fake, as_tuple=True)[0]
    real_term = triplet(e[real], labels[real])
    # fake term by brute force: real a, p of one identity; any fake as the negative
    gaps = [
        (e[a] - e[p]).norm() - (e[a] - e[f]).norm() + 0.2
        for a in real for p in real for f in torch.nonzero(is_fake, as_tuple=True)[0]
        if a != p and labels[a] == labels[p]
    ]
    gaps = torch.stack(gaps)
    fake_term = gaps[gaps > 0].mean()
    assert quad(e, labels, is_fake=is_fake).item() == pytest.approx((real_term + 0.7 * fake_term).item(), abs=1e-5)


def test_quadruplet_batch_hard_picks_the_hardest_fake():
    # 1-d points. Reals: 0 (id 0) at 0.0, 1 (id 0) at 0.1, 2 (id 1) at 0.15, 5 (id 1) at 2.05.
    # Fakes: 3 at 0.3 and 4 at 2.0 (both imitate id 0). Margin 0.5.
    e = torch.tensor([[0.0], [0.1], [0.15], [0.3], [2.0], [2.05]])
    labels = torch.tensor([0, 0, 1, 0, 0, 1])
    is_fake = torch.tensor([False, False, False, True, True, False])
    quad = mined(LOSSES.build({"name": "quadruplet", "args": {"margin": 0.5, "fake_weight": 2.0}}), miner("batch_hard"))
    # real term, hardest positive / hardest real negative per anchor:
    #   a0: 0.1 - 0.15 + 0.5 = 0.45; a1: 0.1 - 0.05 + 0.5 = 0.55; a2: 1.9 - 0.05 + 0.5 = 2.35; a5: 1.9 - 1.95 + 0.5 = 0.45
    real_term = (0.45 + 0.55 + 2.35 + 0.45) / 4
    # fake term, hardest positive / nearest fake (the real negatives do not count here):
    #   a0: 0.1 - 0.3 + 0.5 = 0.3; a1: 0.1 - 0.2 + 0.5 = 0.4; a2: 1.9 - 0.15 + 0.5 = 2.25; a5: 1.9 - 0.05 + 0.5 = 2.35
    fake_term = (0.3 + 0.4 + 2.25 + 2.35) / 4
    assert quad(e, labels, is_fake=is_fake).item() == pytest.approx(real_term + 2.0 * fake_term, abs=1e-5)


def test_wrong_miner_kind_is_a_clear_error():
    with pytest.raises(PetkitError, match="needs a pair miner.*BatchHardMiner"):
        mined(LOSSES.build({"name": "contrastive"}), miner("batch_hard"))
    with pytest.raises(PetkitError, match="needs a triplet miner"):
        mined(LOSSES.build({"name": "triplet"}), miner("all_pairs"))


def test_batch_hard_picks_the_hardest_pairs():
    # 1-d points: labels a a b b; anchor 0 at 0.0: positive 1 at 0.5, negatives at 0.6 and 3.0
    points = torch.tensor([[0.0], [0.5], [0.6], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = miner("batch_hard")(torch.cdist(points, points), labels)
    assert a.tolist() == [0, 1, 2, 3]
    assert p.tolist() == [1, 0, 3, 2]
    assert n.tolist() == [2, 2, 1, 1]


def test_batch_all_counts_every_valid_triplet():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    a, p, n = miner("batch_all")(torch.zeros(6, 6), labels)
    # class 0: 3*2 ordered pairs x 3 negatives; class 1: 2 pairs x 4 negatives
    assert len(a) == 6 * 3 + 2 * 4


def test_adjacent_pairs_reads_the_batch_as_pairs():
    labels = torch.tensor([3, 3, 1, 2, 5, 5])
    a1, p, a2, n = miner("adjacent_pairs")(torch.zeros(6, 6), labels)
    assert (a1.tolist(), p.tolist(), a2.tolist(), n.tolist()) == ([0, 4], [1, 5], [2], [3])
    with pytest.raises(PetkitError, match="even batch"):
        miner("adjacent_pairs")(torch.zeros(3, 3), labels[:3])


@pytest.mark.parametrize("name", MINERS.names())
def test_every_miner_returns_valid_indices(name):
    x, labels = batch()
    e = F.normalize(x, dim=1)
    out = MINERS.build({"name": name})(torch.cdist(e, e), labels)
    assert MINERS.build({"name": name}).kind in ("triplet", "pair")
    if len(out) == 3:
        a, p, n = out
        assert len(a) > 0 and bool((labels[a] == labels[p]).all() and (labels[a] != labels[n]).all() and (a != p).all())
    else:
        a1, p, a2, n = out
        assert len(a1) + len(a2) > 0
        assert bool((labels[a1] == labels[p]).all() and (labels[a2] != labels[n]).all() and (a1 != p).all())


def test_no_positive_pairs_gives_zero_loss_with_a_gradient_path():
    for name in ("triplet", "contrastive", "supcon"):
        x = torch.randn(4, 8, requires_grad=True)
        loss = LOSSES.build({"name": name})(F.normalize(x, dim=1), torch.arange(4))
        loss.backward()
        assert x.grad is not None and torch.isfinite(loss)


def build_any_loss(name: str):
    args = {"losses": [{"name": "cross_entropy"}, {"name": "center", "weight": 0.01}]} if name == "sum" else {}
    return LOSSES.build({"name": name, "args": args}, num_classes=CLASSES, embedding_dim=8)


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_loss_steps_under_cpu_autocast(name, dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(DIM, 8)
    loss_fn = build_any_loss(name)
    x, labels = batch()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        embeddings = F.normalize(layer(x), dim=1)
    extra = {"is_fake": torch.arange(len(labels)) % 7 == 0} if getattr(loss_fn, "needs_fake", False) else {}
    loss = loss_fn(embeddings.float(), labels, **extra)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    for param in loss_fn.parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all()


def test_soft_margin_triplet_is_softplus_of_the_gap():
    x, labels = batch()
    e = F.normalize(x, dim=1)
    soft = mined(LOSSES.build({"name": "triplet", "args": {"soft": True}}), miner("batch_hard"))
    a, p, n = miner("batch_hard")(torch.cdist(e, e), labels)
    gap = (e[a] - e[p]).norm(dim=1) - (e[a] - e[n]).norm(dim=1)
    assert soft(e, labels).item() == pytest.approx(F.softplus(gap).mean().item(), abs=1e-6)


@pytest.mark.parametrize("spec, message", [
    ({"name": "triplet", "args": {"margin": -1}}, "triplet': margin is -1; it must be in"),
    ({"name": "arcface", "args": {"margin": 2.0}}, "arcface': margin is 2.0; it must be in"),
    ({"name": "contrastive", "args": {"distance": "manhattan"}}, "distance must be"),
    ({"name": "supcon", "args": {"temperature": 0}}, "temperature is 0; it must be"),
    ({"name": "cross_entropy", "args": {"label_smoothing": 1.0}}, "label_smoothing"),
    ({"name": "quadruplet", "args": {"fake_weight": -1}}, "fake_weight"),
    ({"name": "sum", "args": {"losses": []}}, "non-empty list"),
    ({"name": "sum", "args": {"losses": [{"name": "sum", "args": {"losses": []}}]}}, "cannot contain another"),
    ({"name": "subcenter_arcface", "args": {"sub_centers": 0}}, "sub_centers"),
])
def test_invalid_loss_arguments(spec, message):
    with pytest.raises(PetkitError, match=message):
        LOSSES.build(spec, num_classes=3, embedding_dim=4)
