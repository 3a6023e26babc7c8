"""Accuracy at a Euclidean distance threshold (the distortion use case's 0.5), checked by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from petkit import embeddings as emb
from petkit.registry import EVALUATORS


def test_accuracy_at_a_distance_threshold_by_hand():
    angles = np.array([0.0, 0.3, 1.2, 1.4, 2.6])  # unit vectors on a circle: distance 2 sin(delta / 2)
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    identities = np.array(["a", "a", "b", "b", "a"])
    columns = {name: np.full(len(vectors), "", dtype=str) for name in emb.COLUMNS}
    columns["identities"] = identities
    data = emb.EmbeddingSet(vectors, columns, "fp")
    right = []
    for i, j in itertools.combinations(range(len(vectors)), 2):
        distance = np.linalg.norm(vectors[i] - vectors[j])
        right.append((distance <= 0.5) == (identities[i] == identities[j]))
    metrics = EVALUATORS.build({"name": "verification", "args": {"distance_threshold": 0.5, "bootstrap": 0}})(data, None)
    entry = next(m for m in metrics if m["name"] == "accuracy@distance")
    assert entry["value"] == pytest.approx(np.mean(right)) and entry["distance"] == 0.5
    assert entry["threshold"] == pytest.approx(1 - 0.5**2 / 2)  # |a - b|^2 = 2 - 2 cos


def test_balanced_pair_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    from petkit.evaluation.metrics import balanced_accuracy_at_threshold

    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, 500)
    same = rng.random(500) < 0.1 + 0.5 * (scores > 0.3)  # few positives, as all pairs of a val set give
    for threshold in (-0.5, 0.0, 0.3, 0.875):
        expected = balanced_accuracy_score(same, scores >= threshold)
        assert balanced_accuracy_at_threshold(scores, same, threshold) == pytest.approx(expected)
    assert np.isnan(balanced_accuracy_at_threshold(scores, np.ones(500, bool), 0.0))


def test_train_can_pick_the_best_model_by_val_pair_accuracy(prepared, tmp_path):
    from petkit.config import resolve
    from petkit.engine.trainer import train

    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=pairs", "train.epochs=2", "data.image_size=32",
                            "model.backbone.args.model=resnet10t", "data.sampler.args={p: 4, k: 2}", "train.val_metric=pair_accuracy",
                            "train.pair_distance_threshold=0.9", "train.early_stopping_patience=null"])
    result = train(config)
    values = [row["val_pair_accuracy"] for row in result.history]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert result.best_metric == max(values[1:])
    header = (result.run_dir / "history.csv").read_text().splitlines()[0]
    assert "val_pair_accuracy" in header
