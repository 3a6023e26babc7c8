import json
import shutil

import numpy as np
import pytest
from PIL import Image

from petkit.data import manifest as mf
from petkit.data.prepare import PrepareOptions, _allocate, parse_ratios, prepare
from petkit.errors import PetkitError
from tests.conftest import tree_digest


def _image(path, seed, size=(20, 24), fmt=None):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture
def messy(tmp_path):
    """Identity folders with every kind of problem prepare must report."""
    src = tmp_path / "src"
    for n, identity in enumerate(("cat_a", "cat_b", "cat_c", "cat_d")):
        for k in range(3):  # distinct fixed seeds: str hashes vary per process and could collide
            _image(src / identity / f"{k}.jpg", 1000 + 10 * n + k, fmt="JPEG")
    (src / "cat_a" / "empty.jpg").write_bytes(b"")
    good = (src / "cat_b" / "0.jpg").read_bytes()
    (src / "cat_b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "cat_c" / "notes.txt").write_text("not a photo")
    shutil.copy(src / "cat_c" / "0.jpg", src / "cat_c" / "copy.jpg")  # duplicate within identity
    shutil.copy(src / "cat_d" / "0.jpg", src / "cat_a" / "stolen.jpg")  # same pixels, two labels
    _image(src / "loose.jpg", 99)
    _image(src / "cat_a" / "distortion" / "blur.jpg", 7)
    _image(src / "cat_b" / "png_named.jpg", 8, fmt="PNG")  # mislabelled format, still decodable
    (src / "empty_identity").mkdir()
    return src


def _reasons(report):
    return {item["path"]: item["reason"] for item in report["excluded"] + report["skipped"]}


def test_bad_files_are_reported_and_the_source_is_untouched(messy, tmp_path):
    before = tree_digest(messy)
    result = prepare(messy, tmp_path / "out", PrepareOptions(split_by="none"))
    assert tree_digest(messy) == before
    reasons = _reasons(result.report)
    assert reasons["cat_a/empty.jpg"] == "empty file (0 bytes)"
    assert reasons["cat_b/truncated.jpg"].startswith("corrupt or truncated image")
    assert reasons["cat_c/notes.txt"] == "not an image"
    assert reasons["cat_c/copy.jpg"] == "exact duplicate (same pixels) of cat_c/0.jpg"
    assert "label conflict" in reasons["cat_a/stolen.jpg"] and "label conflict" in reasons["cat_d/0.jpg"]
    assert reasons["loose.jpg"].startswith("not inside an identity folder")
    assert "--flatten-distortion" in reasons["cat_a/distortion/blur.jpg"]
    notes = {n["path"]: n["note"] for n in result.report["notes"]}
    assert notes["cat_b/png_named.jpg"].startswith("PNG data in a file named '.jpg'")
    manifest = mf.read_manifest(result.manifest_path)
    listed = {row["source"] for row in manifest.rows}
    assert listed == {"cat_a/0.jpg", "cat_a/1.jpg", "cat_a/2.jpg", "cat_b/0.jpg", "cat_b/1.jpg", "cat_b/2.jpg",
                      "cat_b/png_named.jpg", "cat_c/0.jpg", "cat_c/1.jpg", "cat_c/2.jpg", "cat_d/1.jpg", "cat_d/2.jpg"}
    assert all(manifest.abspath(row).is_file() for row in manifest.rows)  # relative paths resolve
    summary = result.report["summary"]
    assert summary["identities"] == 4 and summary["images"] == 12
    assert summary["images_per_identity"] == {"min": 2, "median": 3.0, "max": 4}
    assert json.loads(result.report_path.read_text())["summary"] == summary


def test_flatten_distortion_folds_images_into_their_identity(messy, tmp_path):
    before = tree_digest(messy)
    result = prepare(messy, tmp_path / "out", PrepareOptions(flatten_distortion=True, split_by="none"))
    rows = {r["source"]: r for r in mf.read_manifest(result.manifest_path).rows}
    assert rows["cat_a/distortion/blur.jpg"]["identity"] == "cat_a"
    assert tree_digest(messy) == before  # nothing moved on disk


def test_split_by_identity_keeps_individuals_disjoint(pets_dir, tmp_path):
    result = prepare(pets_dir, tmp_path / "out", PrepareOptions(ratios=(0.5, 0.25, 0.25), seed=3))
    rows = mf.read_manifest(result.manifest_path).rows
    by_split = {s: {r["identity"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    again = prepare(pets_dir, tmp_path / "again", PrepareOptions(ratios=(0.5, 0.25, 0.25), seed=3))
    assert [r["split"] for r in mf.read_manifest(again.manifest_path).rows] == [r["split"] for r in rows]


def test_split_by_image_puts_every_identity_in_train(pets_dir, tmp_path):
    result = prepare(pets_dir, tmp_path / "out", PrepareOptions(split_by="image", ratios=(0.6, 0.2, 0.2), gallery_per_identity=1))
    rows = mf.read_manifest(result.manifest_path).rows
    train_ids = {r["identity"] for r in rows if r["split"] == "train"}
    assert train_ids == {r["identity"] for r in rows}
    assert all(r["role"] == "gallery" for r in rows if r["split"] in ("val", "test"))  # one image each per split
    assert sum(r["split"] == "train" for r in rows) == 8 * 3


def test_csv_listing_keeps_extra_columns(tmp_path):
    _image(tmp_path / "imgs" / "x.png", 1)
    _image(tmp_path / "imgs" / "y.png", 2)
    listing = tmp_path / "list.csv"
    listing.write_text("path,identity,is_fake,category\nimgs/x.png,rex,0,dog\nimgs/y.png,rex,1,dog\n")
    result = prepare(listing, tmp_path / "out", PrepareOptions(split_by="none"))
    rows = mf.read_manifest(result.manifest_path).rows
    assert [(r["is_fake"], r["category"]) for r in rows] == [("0", "dog"), ("1", "dog")]


def test_existing_outputs_and_output_inside_source_are_refused(pets_dir, tmp_path):
    out = tmp_path / "out"
    prepare(pets_dir, out, PrepareOptions(split_by="none"))
    with pytest.raises(PetkitError, match="output already exists"):
        prepare(pets_dir, out, PrepareOptions(split_by="none"))
    prepare(pets_dir, out, PrepareOptions(split_by="none", overwrite=True))
    with pytest.raises(PetkitError, match="inside the source"):
        prepare(pets_dir, pets_dir / "manifest_here", PrepareOptions())
    with pytest.raises(PetkitError, match="source not found"):
        prepare(tmp_path / "missing", tmp_path / "o2")


def test_a_folder_with_no_usable_image_is_an_error(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(PetkitError, match="no usable images"):
        prepare(tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize("n, ratios, expected", [(10, (0.7, 0.15, 0.15), (7, 2, 1)), (3, (0.7, 0.15, 0.15), (2, 1, 0)),
                                                  (1, (0.0001, 1, 1), (1, 0, 0)), (8, (0.5, 0.25, 0.25), (4, 2, 2))])
def test_allocation_sums_and_keeps_train(n, ratios, expected):
    assert _allocate(n, ratios) == expected


def test_ratio_parsing():
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.2", "a,b,c", "0,1,1", "-1,1,1"):
        with pytest.raises(PetkitError, match="--ratios"):
            parse_ratios(bad)


def test_csv_listing_with_splits_keeps_them(tmp_path):
    for i, name in enumerate(("a", "b", "c", "d")):
        _image(tmp_path / "imgs" / f"{name}.png", i + 1)
    listing = tmp_path / "list.csv"
    listing.write_text("path,identity,split\nimgs/a.png,rex,test\nimgs/b.png,rex,test\nimgs/c.png,tom,train\nimgs/d.png,tom,train\n")
    result = prepare(listing, tmp_path / "out", PrepareOptions(split_by="identity", seed=3))
    assert [r["split"] for r in mf.read_manifest(result.manifest_path).rows] == ["test", "test", "train", "train"]
    assert result.report["options"]["split_by"] == "given by the source"


def test_course_layout_errors_are_clear(tmp_path):
    _image(tmp_path / "c" / "known" / "ann" / "1.png", 1)
    _image(tmp_path / "c" / "unknown_dev" / "p1.png", 2)
    with pytest.raises(PetkitError, match="no verification_dev.csv"):
        prepare(tmp_path / "c", tmp_path / "out")
    (tmp_path / "c" / "verification_dev.csv").write_text("image,label\np1.png\n")
    with pytest.raises(PetkitError, match="line 2: expected 'image,label'"):
        prepare(tmp_path / "c", tmp_path / "out")
    (tmp_path / "c" / "verification_dev.csv").write_text("p1,n000000\n")  # no header, stem instead of name
    result = prepare(tmp_path / "c", tmp_path / "out")
    rows = mf.read_manifest(result.manifest_path).rows
    assert [(r["identity"], r["split"], r["role"]) for r in rows] == [("ann", "train", "gallery"), ("n000000/p1", "val", "query")]
