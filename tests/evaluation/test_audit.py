"""petkit audit's three checks against brute-force references written with plain loops, and on planted errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.evaluation import audit as A


def clustered(identities: int = 12, per: int = 5, dim: int = 32, noise: float = 0.35, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim))
    vectors = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(identities * per, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.repeat([f"id{i:02d}" for i in range(identities)], per).astype("<U16")
    return vectors.astype(np.float32), labels


def reference_mislabels(x, labels, k, margin):
    flagged = set()
    for i in range(len(x)):
        best: dict[str, float] = {}
        for j in range(len(x)):
            if i != j:
                best[labels[j]] = max(best.get(labels[j], -9.0), float(x[i] @ x[j]))
        if labels[i] not in best:
            continue  # alone in its identity
        own = best.pop(labels[i])
        others = sorted(best.values(), reverse=True)
        if len(others) >= k and others[k - 1] - own >= margin:
            flagged.add(i)
    return flagged


@pytest.mark.parametrize("k,margin", [(1, 0.0), (1, 0.05), (2, -0.1), (3, 0.0)])
def test_mislabels_match_a_brute_force_reference(k, margin):
    x, labels = clustered(noise=0.9)  # noisy enough that some photos sit nearer other identities
    labels = labels.copy()
    labels[[3, 17, 40]] = labels[[30, 50, 7]]  # three planted relabels
    found, unjudged = A.find_mislabels(x, labels, k, margin)
    assert {f.a for f in found} == reference_mislabels(x, labels, k, margin)
    assert unjudged == 0
    assert all(labels[f.b] != labels[f.a] for f in found)  # the pair shown is a photo of the nearer identity
    assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)


def test_planted_relabels_are_found_and_ranked_first():
    x, labels = clustered()
    true = labels.copy()
    labels[[3, 17, 40]] = ["id09", "id00", "id01"]
    found, _ = A.find_mislabels(x, labels)
    assert {f.a for f in found} == {3, 17, 40}  # well separated clusters: exactly the planted ones
    for f in found:
        assert true[f.b] == true[f.a]  # the photo shown beside it is of its true identity


def test_a_photo_alone_in_its_identity_is_counted_not_flagged():
    x, labels = clustered(identities=4, per=3)
    labels = labels.copy()
    labels[0] = "lonely"
    found, unjudged = A.find_mislabels(x, labels)
    assert unjudged == 1 and 0 not in {f.a for f in found}


def test_duplicates_across_splits_and_identities():
    x, labels = clustered(identities=6, per=4)
    splits = np.array(["train"] * 16 + ["test"] * 8)
    x = np.vstack([x, x[[1, 2]]])  # photo 1 copied into the test split; photo 2 copied under another name
    labels = np.concatenate([labels, [labels[1], "id05"]])
    splits = np.concatenate([splits, ["test", "train"]])
    found = A.find_duplicates(x, labels, splits, threshold=0.999)
    kinds = {(f.kind, f.a, f.b) for f in found}
    assert kinds == {("split_leak", 1, 24), ("identity_duplicate", 2, 25)}
    # reference: every pair above the threshold, with plain loops
    for threshold in (0.5, 0.8):
        expected = set()
        for i, j in itertools.combinations(range(len(x)), 2):
            if float(x[i] @ x[j]) >= threshold:
                if splits[i] != splits[j]:
                    expected.add(("split_leak", i, j))
                if labels[i] != labels[j]:
                    expected.add(("identity_duplicate", i, j))
        assert {(f.kind, f.a, f.b) for f in A.find_duplicates(x, labels, splits, threshold)} == expected


def reference_same_animal(x, labels, min_share):
    """Plain loops: which identity each photo matches best (itself left out), then mutual shares per pair."""
    names = sorted(set(labels))
    size = {n: int((labels == n).sum()) for n in names}
    prefers: dict[tuple[str, str], int] = {}
    for i in range(len(x)):
        if size[labels[i]] < 2:
            continue  # alone in its identity: no vote
        best: dict[str, float] = {}
        for j in range(len(x)):
            if i != j:
                best[labels[j]] = max(best.get(labels[j], -9.0), float(x[i] @ x[j]))
        own = best.pop(labels[i], -np.inf)
        other = max(best, key=best.get)
        if best[other] > own:
            prefers[(labels[i], other)] = prefers.get((labels[i], other), 0) + 1
    found = {}
    for a, b in itertools.combinations(names, 2):
        if prefers.get((a, b), 0) >= 1 and prefers.get((b, a), 0) >= 1:
            share = min(prefers[(a, b)] / size[a], prefers[(b, a)] / size[b])
            if share >= min_share:
                found[(a, b)] = share
    return found


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5])
def test_same_animal_matches_a_brute_force_reference_and_finds_a_split_identity(share):
    x, labels = clustered(identities=10, per=10, noise=0.5)
    labels = labels.copy()
    labels[[0, 2, 4, 6, 8]] = "id00-copy"  # one animal filed under two names
    found = A.find_same_animal(x, labels, share)
    got = {tuple(sorted((labels[f.a], labels[f.b]))): f.score for f in found}
    expected = reference_same_animal(x, labels, share)
    assert got.keys() == expected.keys() and all(got[k] == pytest.approx(v) for k, v in expected.items())
    if share <= 0.3:
        assert ("id00", "id00-copy") in got


def test_one_mislabelled_photo_does_not_make_two_animals_one():
    x, labels = clustered(identities=6, per=5)
    labels = labels.copy()
    labels[3] = "id04"  # a photo of id00 filed under id04: id00's photos prefer id04 (that photo), one of id04's prefers id00
    assert A.find_same_animal(x, labels) == []  # a share of 1/6 for id04, below the default
    assert len(A.find_same_animal(x, labels, 0.1)) == 1  # what the share guards against


def test_audit_on_an_embedding_set_keeps_rows_and_writes_csv(tmp_path):
    x, labels = clustered()
    n = len(x)
    columns = {name: np.full(n, "", dtype=object).astype(str) for name in emb.COLUMNS}
    columns["paths"] = np.array([f"{name}/{i}.jpg" for i, name in enumerate(labels)])
    columns["identities"] = labels.copy()
    columns["splits"] = np.array(["train"] * (n - 10) + ["test"] * 10)
    columns["identities"][5] = "id07"
    x = np.vstack([x, x[:1]])
    for name in columns:
        columns[name] = np.concatenate([columns[name], [columns[name][0] if name != "splits" else "test"]])
    data = emb.EmbeddingSet(x, columns, "abc123")
    result = A.audit(data)
    assert result.counts["mislabel"] >= 1 and 5 in {f.a for f in result.of("mislabel")}
    assert [(f.a, f.b) for f in result.of("split_leak")] == [(0, n)]
    out = tmp_path / "audit.csv"
    A.write_csv(out, result, data)
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(A.CSV_COLUMNS)
    assert any(line.startswith("split_leak,") and "id00/0.jpg" in line for line in lines)


def test_audit_refuses_out_of_range_settings():
    x, labels = clustered(identities=3, per=2)
    data = emb.EmbeddingSet(x, {**{n: np.full(len(x), "") for n in emb.COLUMNS}, "identities": labels}, "abc")
    with pytest.raises(PetkitError, match="duplicate-threshold"):
        A.audit(data, duplicate_threshold=1.5)
