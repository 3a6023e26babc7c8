"""The protocol metrics (#5) against scikit-learn, scipy and hand-worked cases."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import roc_curve as sk_roc_curve

from petkit.evaluation import metrics as M


def scores_and_labels(n=400, seed=0):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + 1.5 * same, 2)  # rounding makes ties
    return scores, same


def test_tar_at_far_matches_sklearn_roc():
    scores, same = scores_and_labels()
    fpr, tpr, thr = sk_roc_curve(same, scores, drop_intermediate=False)
    for far, tar, threshold in M.tar_at_far(scores, same, (0.001, 0.01, 0.1, 0.5)):
        i = np.searchsorted(fpr, far, side="right") - 1
        assert tar == pytest.approx(tpr[i]) and (threshold == thr[i] or (np.isinf(thr[i]) and np.isinf(threshold)))
        accepted = scores >= threshold
        assert accepted[~same].mean() <= far + 1e-12 and accepted[same].mean() == pytest.approx(tar)


def test_tar_at_far_hand_worked():
    # positives 0.9 0.8 0.4, negatives 0.7 0.3 0.2 0.1
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    (_, tar0, t0), (_, tar25, t25) = M.tar_at_far(scores, same, (0.0, 0.25))
    assert tar0 == pytest.approx(2 / 3) and t0 == pytest.approx(0.8)  # FAR 0: accept >= 0.8
    assert tar25 == 1.0 and t25 == pytest.approx(0.4)  # one negative (0.7) may pass: accept >= 0.4
    (_, tar50, t50), = M.tar_at_far(scores, same, (0.5,))
    assert tar50 == 1.0 and t50 == pytest.approx(0.3)


def test_accuracy_at_threshold_and_best_threshold():
    scores, same = scores_and_labels(seed=1)
    assert M.accuracy_at_threshold(scores, same, 0.7) == pytest.approx(accuracy_score(same, scores >= 0.7))
    best, threshold = M.best_accuracy(scores, same)
    brute = max(accuracy_score(same, scores >= t) for t in np.r_[np.unique(scores), np.inf])
    assert best == pytest.approx(brute)
    assert M.accuracy_at_threshold(scores, same, threshold) == pytest.approx(best)


def blobs(ids=6, per=20, d=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d))
    labels = np.repeat(np.arange(ids), per)
    x = centres[labels] + spread * rng.normal(size=(len(labels), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_clustering_scores_separated_and_random():
    x, y = blobs()
    nmi, ami = M.clustering_scores(x, y)
    assert nmi == pytest.approx(1.0) and ami == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(y)
    nmi, ami = M.clustering_scores(x, shuffled)
    assert abs(ami) < 0.05 and nmi < 0.3


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(3).random(500) < 0.6
    low, high = M.bootstrap_interval(values.astype(float), resamples=4000, seed=1)
    ref = stats.bootstrap((values.astype(float),), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.008) and high == pytest.approx(ref.high, abs=0.008)
    assert low < values.mean() < high


def test_grouped_bootstrap_is_wider_when_groups_correlate():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 10)
    values = np.repeat(rng.random(40) < 0.5, 10).astype(float)  # each group all-hit or all-miss
    plain = M.bootstrap_interval(values, seed=0)
    grouped = M.bootstrap_interval(values, groups, seed=0)
    assert grouped[1] - grouped[0] > 2 * (plain[1] - plain[0])


def test_few_shot_matches_sklearn_nearest_centroid_on_the_same_episodes():
    from sklearn.neighbors import NearestCentroid

    x, y = blobs(ids=10, per=8, spread=0.8, seed=2)
    result = M.few_shot_accuracy(x, y, n_way=5, k_shot=2, n_query=3, episodes=50, seed=4)
    reference = []
    for support, queries, classes in M.sample_episodes(y, 5, 2, 3, 50, seed=4):
        support_classes = np.repeat(np.arange(5), 2)
        reference.append(np.mean(NearestCentroid().fit(x[support], support_classes).predict(x[queries]) == classes))
    assert result.accuracies == pytest.approx(np.array(reference))
    assert result.ci95 == pytest.approx(1.96 * np.std(reference, ddof=1) / np.sqrt(50))
    assert 0.2 < result.mean < 1.0


def test_few_shot_refuses_too_few_identities():
    x, y = blobs(ids=3, per=2)
    with pytest.raises(Exception, match="5-way 1-shot needs 5 identities"):
        M.few_shot_accuracy(x, y, n_way=5)


def test_identity_scores_are_per_identity_maxima():
    x, y = blobs(ids=5, per=6, spread=0.5, seed=5)
    labels = np.array([f"id{v}" for v in y])
    names, scores = M.identity_scores(x[:7], x[7:], labels[7:])
    full = x[:7] @ x[7:].T
    for j, name in enumerate(names):
        assert scores[:, j] == pytest.approx(full[:, labels[7:] == name].max(axis=1), abs=1e-6)


def test_closed_set_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert M.closed_set_accuracy(a, b) == pytest.approx(accuracy_score(b, a))


def test_calibrated_threshold_is_exact_on_calibration_and_near_target_elsewhere():
    rng = np.random.default_rng(0)
    calibration, unseen = rng.normal(size=20000), rng.normal(size=20000)
    for target in (0.001, 0.01, 0.05):
        t = M.calibrate_threshold(calibration, target)
        assert M.acceptance_rate(calibration, t) <= target
        assert M.acceptance_rate(calibration, np.nextafter(t, -np.inf) - 1e-12) > target - 1 / 20000
        assert M.acceptance_rate(unseen, t) == pytest.approx(target, abs=max(0.3 * target, 0.0015))


def test_dir_at_fpir_hand_worked():
    # known probes: (score, correct) = (0.9, y) (0.8, n) (0.6, y) (0.3, y); unknown: 0.7 0.5 0.2 0.1
    top = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.2, 0.1])
    known = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    correct = np.array([1, 0, 1, 1, 0, 0, 0, 0], bool)
    strict, quarter, half = M.dir_at_fpir(top, known, correct, (0.0, 0.25, 0.5))
    assert strict.dir == pytest.approx(1 / 4) and strict.achieved_fpir == 0  # only 0.9 passes (> 0.7)
    assert quarter.dir == pytest.approx(2 / 4) and quarter.achieved_fpir == 0.25  # 0.7 accepted, 0.5 rejected
    assert half.dir == pytest.approx(3 / 4) and half.achieved_fpir == 0.5  # threshold just above 0.2 lets 0.3 in


def test_weighted_roc_matches_sklearn_sample_weights():
    from sklearn.metrics import roc_auc_score

    scores, same = scores_and_labels(seed=5)
    weights = np.random.default_rng(1).integers(0, 4, len(scores))
    assert M.roc_auc(scores, same, weights) == pytest.approx(roc_auc_score(same, scores, sample_weight=weights))
    repeated = np.repeat(np.arange(len(scores)), weights)  # a weight is a repeat count
    assert M.equal_error_rate(scores, same, weights)[0] == pytest.approx(M.equal_error_rate(scores[repeated], same[repeated])[0])
