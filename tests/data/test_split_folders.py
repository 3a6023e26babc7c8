"""An ImageFolder root per split (train/ dev/ test/, as the course challenge ships it) is read with its own splits."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from petkit.data import manifest as mf
from petkit.data.prepare import PrepareOptions, prepare
from petkit.data.sources import detect_format
from petkit.errors import PetkitError


def make_tree(root, splits=("train", "dev", "test"), identities=("n000001", "n000002"), per=2):
    shade = 0
    for split in splits:
        for identity in identities:
            folder = root / split / identity
            folder.mkdir(parents=True)
            for i in range(per):
                shade += 9
                Image.new("RGB", (24 + shade % 7, 24), (shade % 256, 40, 90)).save(folder / f"{i}.jpg")
    return root


def test_split_folders_are_detected_and_become_the_splits(tmp_path):
    root = make_tree(tmp_path / "faces")
    assert detect_format(root, labelled=True) == "split_folders"
    result = prepare(root, tmp_path / "out", PrepareOptions())
    rows = mf.read_manifest(result.manifest_path).rows
    by_split = {s: sorted(r[mf.PATH].split("/", 3)[-2] for r in rows if r[mf.SPLIT] == s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 4, "val": 4, "test": 4}  # dev/ is val
    assert all(r[mf.IDENTITY] in ("n000001", "n000002") for r in rows)  # identities, not split names
    assert result.report["options"]["split_by"] == "given by the source"
    assert {r[mf.SOURCE].split("/")[0] for r in rows} == {"train", "dev", "test"}


def test_a_plain_identity_folder_named_train_is_not_a_split(tmp_path):
    root = tmp_path / "pets"
    (root / "train").mkdir(parents=True)  # a dog called "train" with photos directly inside
    Image.new("RGB", (20, 20)).save(root / "train" / "a.jpg")
    (root / "rex").mkdir()
    Image.new("RGB", (21, 20)).save(root / "rex" / "a.jpg")
    assert detect_format(root, labelled=True) == "folder"


def test_two_folders_for_one_split_are_refused(tmp_path):
    root = make_tree(tmp_path / "faces", splits=("train", "dev", "val"))
    with pytest.raises(PetkitError, match="two folders for the val split"):
        prepare(root, tmp_path / "out", PrepareOptions())


def test_no_usable_images_still_writes_the_report_with_every_reason(tmp_path):
    root = tmp_path / "broken"
    (root / "rex").mkdir(parents=True)
    (root / "rex" / "a.jpg").write_bytes(b"not a jpeg at all")
    (root / "rex" / "b.jpg").write_bytes(b"")
    with pytest.raises(PetkitError, match=r"no usable images found .*\(1 corrupt or truncated image, 1 empty file") as error:
        prepare(root, tmp_path / "out", PrepareOptions())
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert {e["path"] for e in report["excluded"]} == {"rex/a.jpg", "rex/b.jpg"}
    assert "prepare_report.json" in error.value.hint
    assert not (tmp_path / "out" / "manifest.csv").exists()
