"""Metric functions against scikit-learn, pytorch-metric-learning and hand-worked cases."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from petkit.evaluation.metrics import equal_error_rate, retrieval_metrics, roc_auc, roc_curve, verification_pairs


def random_set(n=120, d=16, ids=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, ids, n)
    centres = rng.normal(size=(ids, d))
    x = centres[labels] * 0.6 + rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_hand_worked_ranking():
    # one query, gallery ranked by similarity: [b, a, a, c, a]; the query is 'a'
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    angles = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = np.array(["b", "a", "a", "c", "a"])
    m = retrieval_metrics(query, np.array(["a"]), gallery, labels, ks=(1, 2, 3)).metrics
    assert m["recall@1"] == 0 and m["recall@2"] == 1
    assert m["precision@3"] == pytest.approx(2 / 3)
    assert m["top1_accuracy"] == 0 and m["top2_accuracy"] == 1  # distinct identities: b, a, c
    # relevant at ranks 2, 3, 5: AP = (1/2 + 2/3 + 3/5) / 3; R = 3: AP@R = (1/2 + 2/3) / 3
    assert m["mAP"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert m["mAP@R"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert m["R-precision"] == pytest.approx(2 / 3)


def test_top_k_identity_accuracy_differs_from_recall_at_k():
    # ranking b, b, b, a: recall@3 misses 'a' but the 2nd distinct identity is 'a'
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    angles = np.array([0.1, 0.2, 0.3, 0.4])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    m = retrieval_metrics(query, np.array(["a"]), gallery, np.array(["b", "b", "b", "a"]), ks=(2, 3)).metrics
    assert m["recall@3"] == 0 and m["top2_accuracy"] == 1


def test_map_matches_sklearn_average_precision():
    x, y = random_set()
    q, g, qy, gy = x[:40], x[40:], y[:40], y[40:]
    ours = retrieval_metrics(q, qy, g, gy).metrics["mAP"]
    scores = q @ g.T
    aps = [average_precision_score(gy == qy[i], scores[i]) for i in range(len(q)) if (gy == qy[i]).any()]
    assert ours == pytest.approx(np.mean(aps), abs=1e-6)


def test_matches_pytorch_metric_learning_accuracy_calculator():
    calc_mod = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    x, y = random_set(n=150, seed=4)
    calc = calc_mod.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"), k="max_bin_count",
    )
    import torch

    theirs = calc.get_accuracy(torch.tensor(x), torch.tensor(y), torch.tensor(x), torch.tensor(y), ref_includes_query=True)
    ours = retrieval_metrics(x, y, x, y, leave_one_out=True).metrics
    assert ours["precision@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["mAP@R"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours["R-precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)


def test_leave_one_out_never_retrieves_the_query_itself():
    x, y = random_set(n=30, ids=30, seed=1)  # mostly singletons
    y = np.arange(30)
    y[1] = 0  # exactly one pair
    result = retrieval_metrics(x, y, x, y, leave_one_out=True)
    assert result.queries == 2 and result.queries_without_match == 28


def test_same_sequence_is_excluded():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    g = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    labels = np.array(["a", "a"])
    plain = retrieval_metrics(q, np.array(["a"]), g, labels, ks=(1,)).metrics["mAP@R"]
    grouped = retrieval_metrics(q, np.array(["a"]), g, labels, ks=(1,), query_groups=np.array(["s1"]),
                                gallery_groups=np.array(["s1", "s2"]))
    assert plain == 1.0 and grouped.metrics["recall@1"] == 1.0 and grouped.metrics["mAP@R"] == 1.0
    empty = retrieval_metrics(q, np.array(["a"]), g, labels, ks=(1,), query_groups=np.array([""]),
                              gallery_groups=np.array(["", ""]))
    assert empty.gallery == 2 and empty.queries == 1  # empty group ids exclude nothing


def test_roc_and_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=500), 1)  # many ties
    same = rng.random(500) < 0.3 + 0.4 * (scores > 0)
    fpr, tpr, thresholds = roc_curve(scores, same)
    sk_fpr, sk_tpr, _ = sk_roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert roc_auc(scores, same) == pytest.approx(roc_auc_score(same, scores))


def test_eer_hand_worked():
    # genuine 0.9 0.8 0.4; impostor 0.7 0.3 0.2: at t = 0.75 FAR = 0, FRR = 1/3; at t = 0.5 FAR = 1/3, FRR = 1/3
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
    same = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    eer, threshold = equal_error_rate(scores, same)
    assert eer == pytest.approx(1 / 3)
    assert 0.4 <= threshold <= 0.8


def test_eer_perfect_and_inverted():
    same = np.array([1, 1, 0, 0], dtype=bool)
    assert equal_error_rate(np.array([0.9, 0.8, 0.2, 0.1]), same)[0] == 0.0
    assert equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), same)[0] == pytest.approx(1.0)


def test_eer_matches_the_roc_crossing_from_sklearn():
    rng = np.random.default_rng(5)
    same = rng.random(4000) < 0.2
    scores = rng.normal(size=4000) + 1.5 * same
    eer, _ = equal_error_rate(scores, same)
    fpr, tpr, _ = sk_roc_curve(same, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fpr - fnr))
    assert eer == pytest.approx((fpr[i] + fnr[i]) / 2, abs=2e-3)


def test_verification_pairs_all_and_sampled():
    x, y = random_set(n=50)
    scores, same, sampled = verification_pairs(x, y)
    assert not sampled and len(scores) == 50 * 49 // 2
    assert same.sum() == sum(int((y == c).sum()) * (int((y == c).sum()) - 1) // 2 for c in np.unique(y))
    i, j = np.triu_indices(50, 1)
    np.testing.assert_allclose(scores, np.sum(x[i] * x[j], axis=1), atol=1e-6)
    s2, same2, sampled2 = verification_pairs(x, y, max_pairs=500)
    assert sampled2 and len(s2) == 500
    assert roc_auc(s2, same2) == pytest.approx(roc_auc(scores, same), abs=0.08)


def test_vectorised_identity_topk_equals_the_per_query_walk():
    """top-K identity accuracy: the true identity among the first K distinct identities of the ranking."""
    from petkit.evaluation.metrics import _identity_topk

    def walk(order, relevant, labels, k):
        hits = []
        for i in range(len(order)):
            seen, hit = set(), False
            for j in range(order.shape[1]):
                label = labels[order[i, j]]
                if label in seen:
                    continue
                if relevant[i, j]:
                    hit = True
                    break
                seen.add(label)
                if len(seen) >= k:
                    break
            hits.append(hit)
        return np.array(hits)

    rng = np.random.default_rng(0)
    for _ in range(200):
        gallery, queries = int(rng.integers(1, 30)), int(rng.integers(1, 8))
        labels = rng.integers(0, int(rng.integers(1, 8)), gallery).astype(str)
        order = np.argsort(rng.random((queries, gallery)), axis=1)
        relevant = labels[order] == rng.integers(0, 8, queries).astype(str)[:, None]
        for k in (1, 2, 3, 5):
            np.testing.assert_array_equal(_identity_topk(order, relevant, labels, k), walk(order, relevant, labels, k))
