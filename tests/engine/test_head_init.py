"""The head started from the backbone's features: sklearn's whitened PCA, computed exactly through each head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from petkit.engine.head_init import whitened_pca
from petkit.registry import HEADS


def features(n: int = 300, width: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=g) @ torch.randn(width, width, generator=g) + 3.0


def test_whitened_pca_matches_sklearn_up_to_each_axis_sign():
    x = features()
    w, centre = whitened_pca(x, 16)
    ours = ((x - centre) @ w.T).numpy()
    reference = PCA(16, whiten=True, svd_solver="full").fit(x.numpy()).transform(x.numpy())
    signs = np.sign((ours * reference).sum(axis=0))
    assert np.allclose(ours * signs, reference, atol=1e-3)
    assert np.allclose(np.cov(ours.T), np.eye(16), atol=1e-3)  # whitened: unit variance, uncorrelated


def test_rank_deficient_features_stay_finite():
    x = features(10, 40)  # 10 samples span at most 9 directions
    w, centre = whitened_pca(x, 16)
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("name,args", [("mlp", {"hidden_dim": 40, "embedding_dim": 16}), ("mlp", {"hidden_dim": 32, "embedding_dim": 16}),
                                       ("linear", {"embedding_dim": 16})])
def test_each_head_computes_the_projection_exactly(name, args):
    x = features()
    w, centre = whitened_pca(x, 16)
    head = HEADS.build({"name": name, "args": args}, in_features=40)
    head.start_linear(w, centre)
    assert torch.allclose(head.module(x), (x - centre) @ w.T, atol=1e-4)


def test_mlp_spare_hidden_units_start_silent_but_learn():
    x = features()
    w, centre = whitened_pca(x, 8)
    head = HEADS.build({"name": "mlp", "args": {"hidden_dim": 40, "embedding_dim": 8}}, in_features=40)
    head.start_linear(w, centre)
    head.module(x).pow(2).sum().backward()
    last = head.module[-1]
    assert torch.count_nonzero(last.weight[:, 16:]) == 0  # nothing yet from the 24 spare units...
    assert last.weight.grad[:, 16:].abs().sum() > 0  # ...but they receive gradients


def test_heads_that_cannot_start_linear_say_so():
    assert HEADS.build({"name": "mlp", "args": {"hidden_dim": 20, "embedding_dim": 16}}, in_features=40).start_linear is None
    assert HEADS.build({"name": "mlp", "args": {"layers": 3}}, in_features=40).start_linear is None
    assert HEADS.build({"name": "bnneck"}, in_features=40).start_linear is None
