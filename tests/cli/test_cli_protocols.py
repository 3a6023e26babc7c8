"""#5 through the CLI: the course layout, calibrate, open-set submission, index + search, pairs."""

import csv
import json
import shutil

import numpy as np
import pytest

from petkit import embeddings as emb
from tests.conftest import tree_digest

from .test_cli import run, run_cli, trained  # noqa: F401  (the module-scoped trained model)


@pytest.fixture(scope="module")
def course(pets_dir, tmp_path_factory):
    """The course layout from the synthetic pets: 4 enrolled, 4 strangers."""
    root = tmp_path_factory.mktemp("course") / "challenge"
    identities = sorted(p.name for p in pets_dir.iterdir())
    known, strangers = identities[:4], identities[4:]
    truth = ["image,label"]
    for name in known:
        images = sorted((pets_dir / name).iterdir())
        (root / "known" / name).mkdir(parents=True)
        for image in images[:3]:
            shutil.copy(image, root / "known" / name / image.name)
        dev, test = images[3], images[4]
        (root / "unknown_dev").mkdir(exist_ok=True)
        (root / "unknown_test").mkdir(exist_ok=True)
        shutil.copy(dev, root / "unknown_dev" / f"{name}_{dev.name}")
        truth.append(f"{name}_{dev.name},{name}")
        shutil.copy(test, root / "unknown_test" / f"{name}_{test.name}")
    for name in strangers:
        images = sorted((pets_dir / name).iterdir())
        for image in images[:2]:
            shutil.copy(image, root / "unknown_dev" / f"{name}_{image.name}")
            truth.append(f"{name}_{image.name},n000000")
        shutil.copy(images[2], root / "unknown_test" / f"{name}_{images[2].name}")
    (root / "verification_dev.csv").write_text("\n".join(truth) + "\n")
    return root


def test_course_layout_prepare_calibrate_and_submit(course, trained, tmp_path):  # noqa: F811
    _, run_dir, _ = trained
    before = tree_digest(course)
    run("prepare", course, "-o", tmp_path / "data")
    rows = list(csv.DictReader(line for line in (tmp_path / "data" / "manifest.csv").open() if not line.startswith("#")))
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert len(by_split["train"]) == 12 and {r["role"] for r in by_split["train"]} == {"gallery"}
    assert len(by_split["val"]) == 12 and sum(r["identity"].startswith("n000000/") for r in by_split["val"]) == 8
    assert len(by_split["test"]) == 8 and all(r["identity"] == "" and r["role"] == "query" for r in by_split["test"])

    run("embed", run_dir / "best.pt", tmp_path / "data" / "manifest.csv", "-o", tmp_path / "all.npz")
    run("evaluate", tmp_path / "all.npz", "--split", "val", "--gallery-split", "train", "--protocol", "open_set,classification",
        "-o", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    entry = next(m for m in metrics["metrics"] if m["name"] == "dir@fpir=0.1")
    assert entry["known_probes"] == 4 and entry["unknown_probes"] == 8 and metrics["version"] == 2
    assert next(m for m in metrics["metrics"] if m["name"] == "accuracy")["queries"] == 4

    cal = tmp_path / "cal.json"
    run("calibrate", tmp_path / "all.npz", "--split", "val", "--gallery-split", "train", "--far", "0.25", "-o", cal)
    threshold = json.loads(cal.read_text())["threshold"]
    run("submit", tmp_path / "all.npz", "--query-split", "test", "--gallery-split", "train", "--format", "open_set",
        "--calibration", cal, "-o", tmp_path / "open.csv")
    run("submit", tmp_path / "all.npz", "--query-split", "test", "--gallery-split", "train", "--format", "classification",
        "-o", tmp_path / "closed.csv")
    open_rows = list(csv.reader((tmp_path / "open.csv").open()))
    closed_rows = list(csv.reader((tmp_path / "closed.csv").open()))
    test_names = sorted(p.name for p in (course / "unknown_test").iterdir())
    assert open_rows[0] == ["id", "label"] and sorted(r[0] for r in open_rows[1:]) == test_names  # every test image once
    data = emb.load(tmp_path / "all.npz")
    train, test = data.where("splits", "train"), data.where("splits", "test")
    for (image, label), (_, best) in zip(open_rows[1:], closed_rows[1:]):
        vector = test.vectors[[p.endswith(image) for p in test.paths]][0]
        score = max(vector @ train.vectors[train.identities == best].T)
        assert label == (best if score >= threshold else "n000000")
    assert tree_digest(course) == before


def test_index_build_search_and_model_mismatch(trained, pets_dir, tmp_path):  # noqa: F811
    manifest, run_dir, _ = trained
    run("embed", run_dir / "best.pt", manifest, "--split", "train", "-o", tmp_path / "gallery.npz")
    out = run("index", "build", tmp_path / "gallery.npz", "-o", tmp_path / "g.index", "--kind", "hnsw", "--param", "ef_search=64")
    assert "recall@10 against exact search 1.0000" in out
    gallery = emb.load(tmp_path / "gallery.npz")
    one = sorted((pets_dir / gallery.identities[0]).iterdir())[0]
    run("search", tmp_path / "g.index", one, "--top-k", "2", "--threshold", "0.99", "-o", tmp_path / "hits.csv")
    hits = list(csv.DictReader((tmp_path / "hits.csv").open()))
    assert [h["rank"] for h in hits] == ["1", "2"] and hits[0]["identity"] == gallery.identities[0]  # it is enrolled itself
    run("search", tmp_path / "g.index", pets_dir, "--top-k", "1", "-o", tmp_path / "all.csv")
    assert len(list(csv.DictReader((tmp_path / "all.csv").open()))) == sum(1 for _ in pets_dir.rglob("*.jpg"))

    other = emb.load(tmp_path / "gallery.npz")
    other.fingerprint = "0000000000000000"
    emb.save(tmp_path / "other.npz", other)
    run("index", "build", tmp_path / "other.npz", "-o", tmp_path / "o.index")
    result = run_cli("search", tmp_path / "o.index", one, "--model", run_dir / "best.pt")
    assert result.returncode == 2 and "not comparable" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("index", "add", tmp_path / "o.index", tmp_path / "gallery.npz")
    assert result.returncode == 2 and "index holds embeddings of model 0000000000000000" in result.stderr

    name = gallery.identities[0]
    out = run("index", "remove", tmp_path / "g.index", "--identity", name)
    assert f"removed {int((gallery.identities == name).sum())} images" in out
    assert "hnsw" in run("index", "info", tmp_path / "g.index")


def test_pairs_csv_embed_evaluate_and_submit(trained, pets_dir, tmp_path):  # noqa: F811
    _, run_dir, _ = trained
    images = sorted(pets_dir.rglob("*.jpg"))
    pairs = [(images[0], images[1], 1), (images[0], images[6], 0), (images[7], images[8], 1), (images[12], images[2], 0)]
    lines = ["pair_id,path_a,path_b,same"] + [f"q{n},{a},{b},{same}" for n, (a, b, same) in enumerate(pairs)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    run("embed", run_dir / "best.pt", tmp_path / "pairs.csv", "-o", tmp_path / "pairs.npz")
    assert len(emb.load(tmp_path / "pairs.npz")) == 7  # distinct images, each embedded once
    run("evaluate", tmp_path / "pairs.npz", "--protocol", "verification", "--pairs", tmp_path / "pairs.csv", "-o", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["metrics"][0]["pairs"] == 4
    run("submit", tmp_path / "pairs.npz", "--format", "pair_scores", "--pairs", tmp_path / "pairs.csv", "--delimiter", "tab", "-o", tmp_path / "s.tsv")
    rows = [line.split("\t") for line in (tmp_path / "s.tsv").read_text().splitlines()]
    assert rows[0] == ["pair_id", "similarity"] and [r[0] for r in rows[1:]] == ["q0", "q1", "q2", "q3"]
    assert all(-1.0 <= float(r[1]) <= 1.0 for r in rows[1:])
    result = run_cli("submit", tmp_path / "pairs.npz", "--format", "open_set", "-o", tmp_path / "x.csv")
    assert result.returncode == 2 and not (tmp_path / "x.csv").exists()
    assert np.isfinite(float(rows[1][1]))
