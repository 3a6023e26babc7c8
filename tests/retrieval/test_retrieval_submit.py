import numpy as np
import pytest

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.retrieval.index import GalleryIndex
from petkit.submit.writers import query_ids, submit


def unit(rng, n, d=8):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_top_identities(queries, gallery, labels, k):
    scores = queries @ gallery.T
    out = []
    for row in scores:
        best = {}
        for score, label in zip(row, labels):
            best[label] = max(best.get(label, -np.inf), score)
        out.append([name for name, _ in sorted(best.items(), key=lambda kv: -kv[1])[:k]])
    return out


def test_top_identities_equal_a_full_per_identity_max():
    rng = np.random.default_rng(0)
    gallery = unit(rng, 300)
    labels = np.array([f"id{i % 7 if i < 250 else i}" for i in range(300)])  # big and singleton identities
    queries = unit(rng, 25)
    names, scores = GalleryIndex(gallery, labels, fingerprint="fp1").top_identities(queries, 5)
    assert names == brute_force_top_identities(queries, gallery, labels, 5)
    assert all(a >= b for row in scores for a, b in zip(row, row[1:]))


def make_set(rng, identities, splits=None, roles=None, fingerprint="fp1", paths=None):
    n = len(identities)
    columns = {name: np.full(n, "", dtype=object).astype(str) for name in emb.COLUMNS}
    columns["identities"] = np.array(identities)
    columns["paths"] = np.array(paths or [f"{ident}/{i}.jpg" for i, ident in enumerate(identities)])
    if splits:
        columns["splits"] = np.array(splits)
    if roles:
        columns["roles"] = np.array(roles)
    return emb.EmbeddingSet(unit(rng, n), columns, fingerprint, "model.pt", "/data")


def test_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    original = make_set(rng, ["a", "a", "b"], splits=["train", "test", "test"])
    emb.save(tmp_path / "e.npz", original)
    loaded = emb.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(loaded.vectors, original.vectors)
    assert loaded.fingerprint == "fp1" and list(loaded.paths) == list(original.paths)
    assert list(loaded.where("splits", "test").identities) == ["a", "b"]
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PetkitError, match="not a petkit embeddings file"):
        emb.load(tmp_path / "other.npz")


def test_submission_top3_with_roles_and_exact_once(tmp_path):
    rng = np.random.default_rng(2)
    ids = ["a", "b", "c", "d", "a", "b"]
    roles = ["gallery"] * 4 + ["query"] * 2
    data = make_set(rng, ids, roles=roles)
    data.vectors[4] = data.vectors[0]  # query 'a' equals gallery 'a'
    emb.save(tmp_path / "e.npz", data)
    submission = submit(str(tmp_path / "e.npz"))
    assert submission.header == ["image", "pred"]
    assert [row[0] for row in submission.rows] == ["4.jpg", "5.jpg"]
    assert submission.rows[0][1].split(" ")[0] == "a" and len(submission.rows[0][1].split(" ")) == 3
    assert submission.text().splitlines()[0] == "image,pred"


def test_submission_refuses_ambiguous_ids_and_mixed_models(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(PetkitError, match="share the submission id '1.jpg'"):
        query_ids(np.array(["x/1.jpg", "y/1.jpg"]), "name")
    assert query_ids(np.array(["x/1.jpg", "y/2.png"]), "stem") == ["1", "2"]
    assert query_ids(np.array(["x/1.jpg", "y/1.jpg"]), "path") == ["x/1.jpg", "y/1.jpg"]
    emb.save(tmp_path / "q.npz", make_set(rng, ["a", "b"], fingerprint="one"))
    emb.save(tmp_path / "g.npz", make_set(rng, ["a", "b"], fingerprint="two"))
    with pytest.raises(PetkitError, match="different models"):
        submit(str(tmp_path / "q.npz"), str(tmp_path / "g.npz"))
    with pytest.raises(PetkitError, match="cannot tell queries from gallery"):
        submit(str(tmp_path / "q.npz"))


def test_roles_keep_queries_out_of_a_same_file_gallery(tmp_path):
    rng = np.random.default_rng(4)
    ids = ["a", "b", "a", "b", "a", "b"]
    splits = ["train", "train", "test", "test", "test", "test"]
    roles = ["", "", "gallery", "gallery", "query", "query"]
    emb.save(tmp_path / "e.npz", make_set(rng, ids, splits=splits, roles=roles))
    within_test = submit(str(tmp_path / "e.npz"), query_split="test", gallery_split="test", writer_args={"k": 2})
    assert [row[0] for row in within_test.rows] == ["4.jpg", "5.jpg"]
    closed_set = submit(str(tmp_path / "e.npz"), query_split="test", gallery_split="train", writer_args={"k": 2})
    assert [row[0] for row in closed_set.rows] == ["4.jpg", "5.jpg"]  # test gallery images are not queries
    emb.save(tmp_path / "plain.npz", make_set(rng, ids, splits=splits))
    with pytest.raises(PetkitError, match="the same split for both"):
        submit(str(tmp_path / "plain.npz"), query_split="test", gallery_split="test")
    everything = submit(str(tmp_path / "plain.npz"), query_split="test", gallery_split="train")
    assert len(everything.rows) == 4 and all(set(r[1].split()) == {"a", "b"} for r in everything.rows)


def test_unroled_rows_are_never_queries_against_themselves(tmp_path):
    rng = np.random.default_rng(5)
    ids = ["a", "b", "a", "b", "a", "b"]
    roles = ["", "", "gallery", "gallery", "query", "query"]  # train rows carry no role
    emb.save(tmp_path / "e.npz", make_set(rng, ids, roles=roles))
    queries, gallery = emb.query_gallery(emb.load(tmp_path / "e.npz"), None, None)
    assert list(queries.paths) == ["a/4.jpg", "b/5.jpg"] and list(gallery.paths) == ["a/2.jpg", "b/3.jpg"]
    assert [row[0] for row in submit(str(tmp_path / "e.npz")).rows] == ["4.jpg", "5.jpg"]
