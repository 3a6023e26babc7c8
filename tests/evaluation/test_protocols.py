"""Evaluators, calibration, the index, re-ranking and submission writers on embeddings made here."""

import json

import numpy as np
import pytest

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.evaluation import metrics as M
from petkit.evaluation import rerank as R
from petkit.evaluation.evaluate import evaluate, metric_value
from petkit.retrieval.calibration import calibrate, resolve_threshold
from petkit.retrieval.index import GalleryIndex
from petkit.submit.writers import Request, Submission, check_complete, submit


def make_set(ids=12, per=5, d=16, spread=0.7, seed=0, prefix="id", fingerprint="f1", **columns) -> emb.EmbeddingSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d))
    labels = np.repeat(np.arange(ids), per)
    x = centres[labels] + spread * rng.normal(size=(len(labels), d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    n = len(labels)
    cols = {name: np.full(n, "", dtype=object) for name in emb.COLUMNS}
    cols["identities"] = np.array([f"{prefix}{v}" for v in labels], dtype=object)
    cols["paths"] = np.array([f"{prefix}{v}/{i}.jpg" for i, v in enumerate(labels)], dtype=object)
    for name, value in columns.items():
        cols[name] = np.asarray(value, dtype=object) if not isinstance(value, str) else np.full(n, value, dtype=object)
    return emb.EmbeddingSet(x, {k: v.astype(str) for k, v in cols.items()}, fingerprint, "runs/x/best.pt", "")


def concat(*sets):
    return emb.EmbeddingSet(np.concatenate([s.vectors for s in sets]),
                            {k: np.concatenate([s.columns[k] for s in sets]) for k in sets[0].columns},
                            sets[0].fingerprint, sets[0].model, sets[0].root)


def saved(tmp_path, data, name="e.npz"):
    emb.save(tmp_path / name, data)
    return tmp_path / name


def metric(document, name, **match):
    return [m for m in document["metrics"] if m["name"] == name and all(m.get(k) == v for k, v in match.items())]


# ---------------------------------------------------------------------------------------- evaluators


def test_retrieval_intervals_categories_and_trivial_note(tmp_path):
    data = make_set(ids=4, per=6, categories=np.repeat(["cat", "dog"], 12))
    doc = evaluate(saved(tmp_path, data), ["retrieval"], options={"retrieval": {"ks": [1, 5]}})
    overall = metric(doc, "recall@1")[0]
    assert overall["ci95"][0] <= overall["value"] <= overall["ci95"][1]
    assert "trivially 1" in metric(doc, "top5_accuracy")[0]["note"] and "note" not in overall
    # per category: the mean over that category's queries of the per-query values
    result = M.retrieval_metrics(data.vectors, data.identities, data.vectors, data.identities, (1,), leave_one_out=True)
    for category, rows in (("cat", slice(0, 12)), ("dog", slice(12, 24))):
        entry = metric(doc, "recall@1", category=category)[0]
        assert entry["value"] == pytest.approx(result.per_query["recall@1"][rows].mean()) and entry["queries"] == 12


def test_verification_per_category_uses_pairs_within_the_category(tmp_path):
    data = make_set(ids=6, per=4, categories=np.repeat(["cat", "dog"], 12))
    doc = evaluate(saved(tmp_path, data), ["verification"], options={"verification": {"bootstrap": 0}})
    for category, rows in (("cat", slice(0, 12)), ("dog", slice(12, 24))):
        x, y = data.vectors[rows], data.identities[rows]
        i, j = np.triu_indices(12, k=1)
        entry = metric(doc, "eer", category=category)[0]
        assert entry["value"] == pytest.approx(M.equal_error_rate(np.einsum("ij,ij->i", x[i], x[j]), y[i] == y[j])[0])
        assert entry["pairs"] == 66 and entry["positive_pairs"] == 3 * 6


def test_verification_intervals_resample_identities():
    from petkit.evaluation.evaluators import _pair_intervals

    data = make_set(ids=30, per=4, spread=0.9, seed=2)
    i, j, _ = M.pair_indices(len(data), 10**6)
    codes = np.unique(data.identities, return_inverse=True)[1]
    scores, same = np.einsum("ij,ij->i", data.vectors[i], data.vectors[j]), codes[i] == codes[j]
    by_identity = _pair_intervals(scores, same, (codes[i], codes[j]), 300, 0)
    by_pair = _pair_intervals(scores, same, None, 300, 0)
    eer = M.equal_error_rate(scores, same)[0]
    for interval in (by_identity["eer"], by_pair["eer"]):
        assert interval[0] <= eer <= interval[1]
    assert by_identity["eer"][1] - by_identity["eer"][0] > by_pair["eer"][1] - by_pair["eer"][0]


def test_unlabelled_and_fake_images_are_never_scored(tmp_path):
    data = make_set(ids=6, per=4)
    extra = make_set(ids=2, per=3, seed=5, prefix="x")
    extra.columns["identities"] = np.array(["", "", "", "id0", "id0", "id1"])
    extra.columns["is_fake"] = np.array(["0", "0", "0", "1", "1", "1"])
    plain = evaluate(saved(tmp_path, data, "a.npz"), ["retrieval", "verification"])
    mixed = evaluate(saved(tmp_path, concat(data, extra), "b.npz"), ["retrieval", "verification"])
    for name in ("recall@1", "mAP", "roc_auc", "eer"):
        assert metric_value(plain, name) == metric_value(mixed, name)


def test_verification_on_a_pairs_csv(tmp_path):
    data = make_set(ids=5, per=3)
    data.root = str(tmp_path)
    pairs = [(0, 1), (0, 3), (2, 5), (4, 3), (6, 7), (8, 14), (9, 10), (11, 12)]
    lines = ["pair_id,path_a,path_b,same"] + [f"p{n},{data.paths[i]},{data.paths[j]},{int(data.identities[i] == data.identities[j])}"
                                              for n, (i, j) in enumerate(pairs)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    doc = evaluate(saved(tmp_path, data), ["verification"], options={"verification": {"pairs": str(tmp_path / "pairs.csv"), "bootstrap": 0}})
    scores = np.array([data.vectors[i] @ data.vectors[j] for i, j in pairs])
    same = np.array([data.identities[i] == data.identities[j] for i, j in pairs])
    assert metric_value(doc, "eer") == pytest.approx(M.equal_error_rate(scores, same)[0])
    assert metric(doc, "eer")[0]["pairs"] == 8 and "pairs-csv" in metric(doc, "eer")[0]["protocol"]
    (tmp_path / "nosame.csv").write_text("pair_id,path_a,path_b\np0,a.jpg,b.jpg\n")
    with pytest.raises(PetkitError, match="no 'same' column"):
        evaluate(saved(tmp_path, data), ["verification"], options={"verification": {"pairs": str(tmp_path / "nosame.csv")}})


def test_real_fake_eers_use_the_right_negatives(tmp_path):
    real = make_set(ids=4, per=4, spread=0.3)
    fakes = make_set(ids=4, per=2, spread=0.3, seed=0)  # same centres: forgeries that look like their identity
    fakes.columns["is_fake"] = np.full(8, "1")
    real.columns["is_fake"] = np.full(16, "0")
    data = concat(real, fakes)
    doc = evaluate(saved(tmp_path, data), ["real_fake"], options={"real_fake": {"bootstrap": 0}})
    i, j = np.triu_indices(len(data), k=1)
    fake = data.columns["is_fake"] == "1"
    s = np.einsum("ij,ij->i", data.vectors[i], data.vectors[j])
    same = data.identities[i] == data.identities[j]
    genuine = same & ~fake[i] & ~fake[j]
    for name, negatives in (("real", ~same & ~fake[i] & ~fake[j]), ("fake", same & (fake[i] ^ fake[j]))):
        keep = genuine | negatives
        assert metric_value(doc, f"eer_{name}") == pytest.approx(M.equal_error_rate(s[keep], genuine[keep])[0])
    assert metric_value(doc, "eer_fake") > metric_value(doc, "eer_real")  # look-alike fakes are the harder negatives
    with pytest.raises(PetkitError, match="no fake images"):
        evaluate(saved(tmp_path, real, "r.npz"), ["real_fake"])


def test_open_set_with_an_enrolled_gallery(tmp_path):
    known = make_set(ids=6, per=4, seed=1)
    strangers = make_set(ids=4, per=3, seed=2, prefix="s")
    gallery_mask = np.zeros(len(known), bool)
    gallery_mask[::4] = True
    known.columns["roles"] = np.where(gallery_mask, "gallery", "query")
    strangers.columns["roles"] = np.full(len(strangers), "query")
    data = concat(known, strangers)
    doc = evaluate(saved(tmp_path, data), ["open_set"], options={"open_set": {"fpirs": [0.1], "bootstrap": 0}})
    probes, gallery = data.subset(data.columns["roles"] == "query"), data.subset(data.columns["roles"] == "gallery")
    names, scores = M.identity_scores(probes.vectors, gallery.vectors, gallery.identities)
    top, best = scores.max(axis=1), names[scores.argmax(axis=1)]
    is_known = np.isin(probes.identities, names)
    expected = M.dir_at_fpir(top, is_known, best == probes.identities, (0.1,))[0]
    entry = metric(doc, "dir@fpir=0.1")[0]
    assert entry["value"] == pytest.approx(expected.dir) and entry["threshold"] == pytest.approx(expected.threshold)
    assert entry["known_probes"] == 18 and entry["unknown_probes"] == 12 and entry["gallery_identities"] == 6


def test_open_set_splits_identities_when_there_is_no_gallery(tmp_path):
    from petkit.evaluation.identification import enrolment_split

    data = make_set(ids=10, per=4)
    probes, gallery = enrolment_split(data, 0.5, 1, seed=3)
    assert len(gallery) == 5 and len(set(gallery.identities)) == 5
    assert len(probes) + len(gallery) == len(data) and not set(gallery.paths) & set(probes.paths)
    doc = evaluate(saved(tmp_path, data), ["open_set"])
    assert metric(doc, "rank1_identification")[0]["unknown_probes"] == 20
    only_known = make_set(ids=3, per=3)
    only_known.columns["roles"] = np.tile(["gallery", "query", "query"], 3)
    with pytest.raises(PetkitError, match="known and unknown probes"):
        evaluate(saved(tmp_path, only_known, "k.npz"), ["open_set"])


def test_classification_nearest_and_centroid(tmp_path):
    data = make_set(ids=5, per=6, spread=1.0, splits=np.tile(["train", "train", "train", "train", "test", "test"], 5))
    doc = evaluate(saved(tmp_path, data), ["classification"], split="test", gallery_split="train",
                   options={"classification": {"rule": "centroid", "ks": [1, 3]}})
    train, test = data.where("splits", "train"), data.where("splits", "test")
    names = np.unique(train.identities)
    centroids = np.stack([train.vectors[train.identities == n].mean(axis=0) for n in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    predicted = names[(test.vectors @ centroids.T).argmax(axis=1)]
    assert metric_value(doc, "accuracy") == pytest.approx(np.mean(predicted == test.identities))
    assert metric_value(doc, "top3_accuracy") >= metric_value(doc, "accuracy")
    with pytest.raises(PetkitError, match="labelled gallery"):
        evaluate(saved(tmp_path, data), ["classification"], split="test")


def test_few_shot_without_enough_identities_says_what_to_lower(tmp_path):
    with pytest.raises(PetkitError, match="5-way 1-shot needs 5 identities with at least 2 images; found 3"):
        evaluate(saved(tmp_path, make_set(ids=3, per=4)), ["few_shot"])


def test_few_shot_and_clustering_evaluators(tmp_path):
    data = make_set(ids=8, per=3, spread=0.5)
    doc = evaluate(saved(tmp_path, data), ["few_shot", "clustering"], options={"few_shot": {"k_shot": [1, 5], "episodes": 100}})
    names = [m["name"] for m in doc["metrics"]]
    assert "5way1shot_accuracy" in names and "5way5shot_accuracy" not in names  # 3 images per identity: no 5-shot
    shot = metric(doc, "5way1shot_accuracy")[0]
    expected = M.few_shot_accuracy(data.vectors, data.identities, 5, 1, 1, 100, 0)
    assert shot["value"] == pytest.approx(expected.mean) and shot["ci95"][1] - shot["value"] == pytest.approx(expected.ci95)
    assert metric_value(doc, "NMI") == pytest.approx(M.clustering_scores(data.vectors, data.identities)[0])


def test_protocol_options_are_checked(tmp_path):
    path = saved(tmp_path, make_set())
    with pytest.raises(PetkitError, match="not run: few_shot"):
        evaluate(path, ["retrieval"], options={"few_shot": {"n_way": 3}})
    with pytest.raises(PetkitError, match="rejected its arguments"):
        evaluate(path, ["retrieval"], options={"retrieval": {"kss": [1]}})


# ---------------------------------------------------------------------------------------- re-ranking


def test_k_reciprocal_jaccard_matches_the_dense_definition():
    data = make_set(ids=5, per=4, spread=0.8)
    q, g = data.vectors[:6], data.vectors[6:]
    ours = -R.k_reciprocal(q, g, k1=5, k2=1, lambda_=0.0)
    items = np.concatenate([q, g])
    d = np.clip(2 - 2 * items @ items.T, 0, None)
    d /= d.max(axis=1, keepdims=True)
    weights = R._neighbour_weights(d.astype(np.float32), np.argsort(d, axis=1, kind="stable"), 5)
    dense = np.array([[1 - np.minimum(weights[i], weights[j]).sum() / np.maximum(weights[i], weights[j]).sum()
                       for j in range(6, len(items))] for i in range(6)])
    np.testing.assert_allclose(ours, dense, atol=1e-5)


def test_reranking_extremes_reduce_to_plain_ranking():
    data = make_set(ids=6, per=5)
    q, g = data.vectors[:10], data.vectors[10:]
    plain = q @ g.T
    only_original = R.k_reciprocal(q, g, lambda_=1.0)
    assert (np.argsort(-only_original, axis=1)[:, :5] == np.argsort(-plain, axis=1)[:, :5]).all()
    np.testing.assert_allclose(R.query_expansion(q, g, n=0), plain, atol=1e-6)


def test_query_expansion_hand_worked():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    g = np.array([[0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    expanded = q + 0.8 ** 2 * g[0]  # n=1, alpha=2: the nearest (0.8) weighted by 0.8^2
    expanded /= np.linalg.norm(expanded)
    np.testing.assert_allclose(R.query_expansion(q, g, n=1, alpha=2.0), expanded @ g.T, atol=1e-6)


def test_reranked_retrieval_runs_through_evaluate(tmp_path):
    path = saved(tmp_path, make_set(ids=8, per=5))
    for method in ("k_reciprocal", "query_expansion"):
        doc = evaluate(path, ["retrieval"], options={"retrieval": {"rerank": method, "bootstrap": 0}})
        assert doc["metrics"][0]["protocol"].endswith(method) and 0 < metric_value(doc, "mAP") <= 1


# ---------------------------------------------------------------------------------------- calibration


def test_calibrated_open_set_threshold_holds_on_unseen_individuals(tmp_path):
    """FAR set on one group of never-enrolled individuals is close to target on another group."""
    gallery = make_set(ids=100, per=1, d=32, spread=0.9, seed=1, prefix="g", splits="train")
    calibration = make_set(ids=300, per=2, d=32, spread=0.9, seed=2, prefix="c", splits="val")
    unseen = make_set(ids=300, per=2, d=32, spread=0.9, seed=3, prefix="u", splits="test")
    path = saved(tmp_path, concat(gallery, calibration, unseen))
    for far in (0.01, 0.05):
        document = calibrate(path, far, split="val", gallery_split="train")
        assert document["achieved_far"] <= far and document["unknown_probes"] == 600 and document["gallery_identities"] == 100
        _, scores = M.identity_scores(unseen.vectors, gallery.vectors, gallery.identities)
        achieved = M.acceptance_rate(scores.max(axis=1), document["threshold"])
        assert achieved == pytest.approx(far, abs=max(0.6 * far, 0.01)), (far, achieved)


def test_pairs_calibration_and_its_checks(tmp_path):
    data = make_set(ids=20, per=3)
    path = saved(tmp_path, data)
    document = calibrate(path, 0.05, mode="pairs")
    scores, same, _ = M.verification_pairs(data.vectors, data.identities)
    assert M.acceptance_rate(scores[~same], document["threshold"]) <= 0.05
    (tmp_path / "cal.json").write_text(json.dumps(document))
    assert resolve_threshold(None, tmp_path / "cal.json", "f1", "")[0] == document["threshold"]
    assert resolve_threshold(0.3, tmp_path / "cal.json", "other", "")[0] == 0.3  # an explicit threshold wins
    with pytest.raises(PetkitError, match="calibrated for model f1"):
        resolve_threshold(None, tmp_path / "cal.json", "other", "")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PetkitError, match="not valid JSON"):
        resolve_threshold(None, tmp_path / "bad.json", "f1", "")
    with pytest.raises(PetkitError, match="--far is 1.0; it must be in"):
        calibrate(path, 1.0)


# ---------------------------------------------------------------------------------------- index


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_kinds_save_load_add_remove(tmp_path, kind):
    data = make_set(ids=200, per=10, d=32, spread=1.0)
    index = GalleryIndex(data.vectors, data.identities, kind, data.paths, "f1", "runs/x/best.pt")
    recall = index.recall_against_exact(data.vectors[:200], 10)
    assert recall == 1.0 if kind == "flat" else recall > 0.8
    index.save(tmp_path / "g.index")
    loaded = GalleryIndex.load(tmp_path / "g.index")
    assert loaded.kind == kind and loaded.fingerprint == "f1" and len(loaded) == len(data)
    np.testing.assert_array_equal(loaded.search(data.vectors[:20], 5)[1], index.search(data.vectors[:20], 5)[1])
    newcomers = make_set(ids=3, per=2, d=32, seed=9, prefix="new")
    loaded.add(newcomers.vectors, newcomers.identities, fingerprint="f1")
    assert loaded.n_identities == 203 and loaded.top_identities(newcomers.vectors[:1], 1)[0][0][0] == "new0"
    assert loaded.remove(["new0", "id0"]) == 12 and "new0" not in set(loaded.labels) and loaded.n_identities == 201
    assert len(loaded) == len(data) + 6 - 12
    with pytest.raises(PetkitError, match="index holds embeddings of model f1"):
        loaded.add(newcomers.vectors, newcomers.identities, fingerprint="f2")
    with pytest.raises(PetkitError, match="not in the index"):
        loaded.remove(["nobody"])


def test_index_load_refuses_other_files(tmp_path):
    (tmp_path / "x.index").write_bytes(b"garbage")
    with pytest.raises(PetkitError, match="cannot read index"):
        GalleryIndex.load(tmp_path / "x.index")
    emb.save(tmp_path / "e.npz", make_set())
    with pytest.raises(PetkitError, match="not a petkit index"):
        GalleryIndex.load(tmp_path / "e.npz")


# ---------------------------------------------------------------------------------------- writers


def challenge_set(tmp_path):
    data = make_set(ids=6, per=4, splits=np.tile(["train", "train", "train", "test"], 6))
    strangers = make_set(ids=3, per=1, seed=7, prefix="s", splits="test")
    strangers.columns["identities"] = np.full(3, "")  # unlabelled test images
    strangers.columns["roles"] = np.full(3, "query")
    return saved(tmp_path, concat(data, strangers)), data, strangers


def test_open_set_and_classification_writers(tmp_path):
    path, data, strangers = challenge_set(tmp_path)
    closed = submit(str(path), None, "test", "train", "classification", {}, "path")
    assert closed.header == ["id", "label"] and len(closed.rows) == 9
    open_rows = submit(str(path), None, "test", "train", "open_set", {"unknown_label": "n000000"}, "path", threshold=0.5).rows
    train = data.where("splits", "train")
    tests = concat(data.where("splits", "test"), strangers)
    names, scores = M.identity_scores(tests.vectors, train.vectors, train.identities)
    expected = [names[s.argmax()] if s.max() >= 0.5 else "n000000" for s in scores]
    assert [row[1] for row in open_rows] == expected and [row[0] for row in open_rows] == list(tests.paths)
    with pytest.raises(PetkitError, match="needs a similarity threshold"):
        submit(str(path), None, "test", "train", "open_set", {}, "path")


def test_pair_scores_writer_and_delimiter(tmp_path):
    data = make_set(ids=3, per=2)
    data.root = str(tmp_path)
    path = saved(tmp_path, data)
    (tmp_path / "pairs.csv").write_text(f"pair_id,path_a,path_b\n7,{data.paths[0]},{data.paths[1]}\n8,{data.paths[2]},{data.paths[5]}\n")
    result = submit(str(path), writer="pair_scores", writer_args={"delimiter": ";", "digits": 4}, pairs=str(tmp_path / "pairs.csv"))
    assert result.text().splitlines() == ["pair_id;similarity", f"7;{data.vectors[0] @ data.vectors[1]:.4f}",
                                          f"8;{data.vectors[2] @ data.vectors[5]:.4f}"]
    (tmp_path / "missing.csv").write_text("pair_id,path_a,path_b\n1,nowhere.jpg,id0/0.jpg\n")
    with pytest.raises(PetkitError, match="not in the embeddings"):
        submit(str(path), writer="pair_scores", pairs=str(tmp_path / "missing.csv"))
    with pytest.raises(PetkitError, match="pass --pairs"):
        submit(str(path), writer="pair_scores")


def test_incomplete_submission_is_refused_before_writing():
    with pytest.raises(PetkitError, match="exactly once"):
        check_complete(Submission([["a", "x"], ["a", "y"]], ["id", "label"]), ["a", "b"])
    check_complete(Submission([["a", "x"], ["b", "y"]], ["id", "label"]), ["a", "b"])
    with pytest.raises(PetkitError, match="exactly once"):
        check_complete(Submission([["b", "y"], ["a", "x"]], ["id", "label"]), ["a", "b"])  # order is the test set's


def test_a_plugin_writer_gets_the_threshold(tmp_path):
    from petkit.interfaces import SubmissionWriter
    from petkit.registry import SUBMISSIONS

    path, _, _ = challenge_set(tmp_path)
    seen = []

    class Echo(SubmissionWriter):
        def __call__(self, request: Request) -> Submission:
            seen.append(request.threshold)
            return Submission([[i, "x"] for i in request.ids], ["id", "label"])

    @SUBMISSIONS.register("test_threshold_echo")
    def echo() -> Echo:
        return Echo()

    try:
        submit(str(path), None, "test", "train", "test_threshold_echo", {}, "path", threshold=0.42)
    finally:
        SUBMISSIONS._entries.pop("test_threshold_echo", None)
    assert seen == [0.42]


def test_dataset_sources_are_detected(tmp_path):
    from petkit.data.sources import detect_format

    (tmp_path / "ids" / "rex").mkdir(parents=True)
    (tmp_path / "ids" / "rex" / "1.jpg").write_bytes(b"x")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "1.jpg").write_bytes(b"x")
    (tmp_path / "course" / "known" / "ann").mkdir(parents=True)
    (tmp_path / "course" / "unknown_test").mkdir()
    (tmp_path / "pairs.csv").write_text("pair_id,path_a,path_b\n")
    (tmp_path / "manifest.csv").write_text("path,identity\n")
    assert [detect_format(tmp_path / name) for name in ("ids", "flat", "flat/1.jpg", "course", "pairs.csv", "manifest.csv")] == [
        "folder", "images", "images", "course_verification", "pairs", "manifest"]
