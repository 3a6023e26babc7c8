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
