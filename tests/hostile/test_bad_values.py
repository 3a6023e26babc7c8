"""3. The bad-value walk: every command with values outside their declared ranges and with damaged
files. Each must exit 2 with one 'error:' line (and a hint), no traceback, and write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import tree_digest
from tests.hostile.conftest import one_line_error, run_petkit

TRAIN = ("train", "--manifest", "{manifest}", "--output-dir", "{tmp}/runs", "--name", "bad", "--device", "cpu")

CASES = {
    # train: every numeric setting has a declared range (config schema and component factories)
    "train --epochs 0": (*TRAIN, "--epochs", "0"),
    "train --lr -1": (*TRAIN, "--lr", "-1"),
    "train --lr nan": (*TRAIN, "--lr", "nan"),
    "train --image-size 0": (*TRAIN, "--image-size", "0"),
    "train --image-size -5": (*TRAIN, "--image-size", "-5"),
    "train grad_clip=-1": (*TRAIN, "train.grad_clip=-1"),
    "train weight_decay=-1": (*TRAIN, "optim.weight_decay=-1"),
    "train ema_decay=1.5": (*TRAIN, "train.ema_decay=1.5"),
    "train accumulate_steps=0": (*TRAIN, "train.accumulate_steps=0"),
    "train num_workers=-1": (*TRAIN, "data.num_workers=-1"),
    "train sampler k=0": (*TRAIN, "data.sampler.args.k=0"),
    "train sampler p=1": (*TRAIN, "data.sampler.args.p=1"),
    "train temperature=0": (*TRAIN, "loss.args.temperature=0"),
    "train margin=-1": (*TRAIN, "--loss", "triplet", "loss.args.margin=-1"),
    "train arcface margin=2": (*TRAIN, "--loss", "arcface", "loss.args.margin=2"),
    "train warmup=-1": (*TRAIN, "optim.schedule.args.warmup_epochs=-1"),
    "train embedding_dim=0": (*TRAIN, "model.head.args.embedding_dim=0"),
    "train group_lr=-1": (*TRAIN, "optim.group_lr.head=-1"),
    "train std=0": (*TRAIN, "data.std=[0, 0.5, 0.5]"),
    "train seed=-1": (*TRAIN, "train.seed=-1"),
    "train patience=0": (*TRAIN, "train.early_stopping_patience=0"),
    "train bad yaml": (*TRAIN, "train.epochs=[1"),
    "train unknown key": (*TRAIN, "train.epoch=3"),
    "train config python tag": (*TRAIN, "--config", "{tmp}/pytag.yaml"),
    "train config billion laughs": (*TRAIN, "--config", "{tmp}/laughs.yaml"),
    "train config not a mapping": (*TRAIN, "--config", "{tmp}/list.yaml"),
    "train --resume a checkpoint without config": ("train", "--resume", "--name", "noconfig", "--output-dir", "{tmp}/resumable",
                                                   "--manifest", "{manifest}"),
    "train --resume nothing": ("train", "--resume", "--name", "none", "--output-dir", "{tmp}/runs"),
    "train output_dir is a file": ("train", "--manifest", "{manifest}", "--output-dir", "{emb}", "--name", "x", "--device", "cpu"),
    # embed
    "embed --batch-size 0": ("embed", "{model}", "{photos}", "-o", "{tmp}/o.npz", "--batch-size", "0"),
    "embed --batch-size abc": ("embed", "{model}", "{photos}", "-o", "{tmp}/o.npz", "--batch-size", "abc"),
    "embed --workers -1": ("embed", "{model}", "{photos}", "-o", "{tmp}/o.npz", "--workers", "-1"),
    "embed -o existing folder": ("embed", "{model}", "{photos}", "-o", "{photos}"),
    "embed -o under a file": ("embed", "{model}", "{photos}", "-o", "{emb}/o.npz"),
    "embed latin-1 manifest": ("embed", "{model}", "{tmp}/latin1.csv", "-o", "{tmp}/o.npz"),
    "embed stray quote": ("embed", "{model}", "{tmp}/quote.csv", "-o", "{tmp}/o.npz"),
    "embed missing file": ("embed", "{model}", "{tmp}/missing.csv", "-o", "{tmp}/o.npz"),
    "embed control char": ("embed", "{model}", "{tmp}/control.csv", "-o", "{tmp}/o.npz"),
    "embed garbage checkpoint": ("embed", "{tmp}/garbage.pt", "{photos}", "-o", "{tmp}/o.npz"),
    "embed checkpoint without weights": ("embed", "{tmp}/noweights.pt", "{photos}", "-o", "{tmp}/o.npz"),
    "embed card image_size 0": ("embed", "{tmp}/size0.pt", "{photos}", "-o", "{tmp}/o.npz"),
    "embed card with a 100k-channel net": ("embed", "{tmp}/huge.pt", "{photos}", "-o", "{tmp}/o.npz"),
    "embed --precision bf16 onnx": ("embed", "{tmp}/x.onnx", "{photos}", "-o", "{tmp}/o.npz", "--precision", "bf16"),
    "embed garbage onnx": ("embed", "{tmp}/garbage.onnx", "{photos}", "-o", "{tmp}/o.npz"),
    # search and index
    "search --top-k 0": ("search", "{index}", "{photo}", "--top-k", "0"),
    "search --threshold 2": ("search", "{index}", "{photo}", "--threshold", "2"),
    "search garbage index": ("search", "{tmp}/garbage.index", "{photo}"),
    "search corrupt faiss blob": ("search", "{tmp}/blob.index", "{photo}"),
    "search string threshold calibration": ("search", "{index}", "{photo}", "--calibration", "{tmp}/strcal.json"),
    "index build ivf nlist=-1": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--kind", "ivf", "--param", "nlist=-1"),
    "index build hnsw m=0": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--kind", "hnsw", "--param", "m=0"),
    "index build unknown param": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--kind", "hnsw", "--param", "nprobe=4"),
    "index build flat param": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--param", "m=8"),
    "index build ef_search=1.5": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--kind", "hnsw", "--param", "ef_search=1.5"),
    "index build unknown kind": ("index", "build", "{emb}", "-o", "{tmp}/i.index", "--kind", "lsh"),
    "index remove unknown": ("index", "remove", "{tmp}/copy.index", "--identity", "nobody"),
    # export
    "export --opset 5": ("export-onnx", "{model}", "-o", "{tmp}/m.onnx", "--images", "{photos}", "--opset", "5"),
    "export --opset 99": ("export-onnx", "{model}", "-o", "{tmp}/m.onnx", "--images", "{photos}", "--opset", "99"),
    "export --samples 0": ("export-onnx", "{model}", "-o", "{tmp}/m.onnx", "--images", "{photos}", "--samples", "0"),
    "export --atol -1": ("export-onnx", "{model}", "-o", "{tmp}/m.onnx", "--images", "{photos}", "--atol", "-1"),
    "export no parity images": ("export-onnx", "{model}", "-o", "{tmp}/m.onnx"),
    # evaluate, calibrate, submit
    "evaluate ks=[0]": ("evaluate", "{emb}", "-o", "{tmp}/m.json", "--protocol", "retrieval", "--option", "retrieval.ks=[0]"),
    "evaluate fars=[2]": ("evaluate", "{emb}", "-o", "{tmp}/m.json", "--protocol", "verification", "--option", "verification.fars=[2]"),
    "evaluate n_way=1": ("evaluate", "{emb}", "-o", "{tmp}/m.json", "--protocol", "few_shot", "--option", "few_shot.n_way=1"),
    "evaluate unknown protocol": ("evaluate", "{emb}", "-o", "{tmp}/m.json", "--protocol", "bogus"),
    "evaluate garbage npz": ("evaluate", "{tmp}/garbage.npz", "-o", "{tmp}/m.json"),
    "calibrate --far 0": ("calibrate", "{emb}", "--far", "0", "-o", "{tmp}/c.json"),
    "calibrate --far 1.5": ("calibrate", "{emb}", "--far", "1.5", "-o", "{tmp}/c.json"),
    "submit --top-k 0": ("submit", "{emb}", "-o", "{tmp}/s.csv", "--top-k", "0"),
    "audit --duplicate-threshold 2": ("audit", "{emb}", "-o", "{tmp}/a.csv", "--duplicate-threshold", "2"),
    "audit --mislabel-k 0": ("audit", "{emb}", "-o", "{tmp}/a.csv", "--mislabel-k", "0"),
    "audit --top -1": ("audit", "{emb}", "-o", "{tmp}/a.csv", "--top", "-1"),
    "audit garbage npz": ("audit", "{tmp}/garbage.npz", "-o", "{tmp}/a.csv"),
    "submit --threshold 5": ("submit", "{emb}", "-o", "{tmp}/s.csv", "--format", "open_set", "--threshold", "5"),
    # prepare and synth
    "prepare --ratios": ("prepare", "{photos}", "-o", "{tmp}/p", "--ratios", "0,1,1"),
    "prepare --workers 0": ("prepare", "{photos}", "-o", "{tmp}/p", "--workers", "0"),
    "prepare --gallery-per-identity -1": ("prepare", "{photos}", "-o", "{tmp}/p", "--gallery-per-identity", "-1"),
    "prepare -o a file": ("prepare", "{photos}", "-o", "{emb}"),
    "prepare utf-16 bad": ("prepare", "{tmp}/utf16bad.csv", "-o", "{tmp}/p"),
    "prepare stray quote": ("prepare", "{tmp}/quote.csv", "-o", "{tmp}/p"),
    "synth --identities 1": ("synth", "{tmp}/s", "--identities", "1"),
    "synth --size 0": ("synth", "{tmp}/s", "--size", "0"),
    "synth --fakes -1": ("synth", "{tmp}/s", "--fakes", "-1"),
    # --overwrite never replaces what a command reads
    "evaluate -o its input": ("evaluate", "{tmp}/own.npz", "-o", "{tmp}/own.npz", "--overwrite"),
    "calibrate -o its input": ("calibrate", "{tmp}/own.npz", "-o", "{tmp}/own.npz", "--overwrite"),
    "submit -o its input": ("submit", "{tmp}/own.npz", "-o", "{tmp}/own.npz", "--overwrite"),
    "audit -o its input": ("audit", "{tmp}/own.npz", "-o", "{tmp}/own.npz", "--overwrite"),
    "index build -o its input": ("index", "build", "{tmp}/own.npz", "-o", "{tmp}/own.npz", "--overwrite"),
    "embed -o its model": ("embed", "{tmp}/own.pt", "{photos}", "-o", "{tmp}/own.pt", "--overwrite"),
    "export-onnx -o its checkpoint": ("export-onnx", "{tmp}/own.pt", "-o", "{tmp}/own.pt", "--images", "{photos}", "--overwrite"),
    # usage mistakes
    "missing argument": ("embed",),
    "unknown option": ("embed", "{model}", "{photos}", "--bogus"),
}


@pytest.fixture(scope="module")
def bad_files(material, tmp_path_factory):
    """Damaged and hostile files next to the good ones."""
    import torch

    from petkit.models.checkpoint import read_checkpoint

    tmp = tmp_path_factory.mktemp("bad")
    photo = material["photo"]
    (tmp / "latin1.csv").write_bytes(f"path,identity\n{photo},M\xfcller\n".encode("latin-1"))
    (tmp / "quote.csv").write_text(f"path,identity\n{photo},a\n{photo},\"b\n{photo},c\n{photo},d\n")
    (tmp / "missing.csv").write_text(f"path,identity\n{photo},a\n{tmp}/nope.jpg,b\n")
    (tmp / "control.csv").write_text(f"path,identity\n{photo},a\x1cb\n")
    (tmp / "utf16bad.csv").write_bytes(b"\xff\xfe" + b"p\x00a\x00\x00\xd8")  # a BOM, then a lone surrogate
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint" * 10)
    (tmp / "pytag.yaml").write_text("name: !!python/object/apply:os.system ['touch PWNED']\n")
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                                                      for p, c in zip("abcdefg", "bcdefgh")]
    (tmp / "laughs.yaml").write_text("\n".join(laughs) + "\nmodel: {backbone: {name: timm, args: {x: *h}}}\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    from petkit.models.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp / "v2.pt", load_checkpoint(material["model"]).model)
    huge = torch.load(tmp / "v2.pt", weights_only=True)
    huge["card"]["backbone"] = {"name": "scratch_resnet", "args": {"channels": [100_000], "depths": [64], "strides": [1]}}
    torch.save(huge, tmp / "huge.pt")
    (tmp / "resumable" / "noconfig").mkdir(parents=True)
    (tmp / "v2.pt").rename(tmp / "resumable" / "noconfig" / "last.pt")  # a best.pt put where last.pt belongs
    (tmp / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 10)
    (tmp / "x.onnx").write_bytes(b"")
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04broken")
    (tmp / "garbage.index").write_bytes(b"\x00" * 64)
    state = read_checkpoint(material["model"])
    torch.save({k: v for k, v in state.items() if k != "model"}, tmp / "noweights.pt")
    crafted = dict(state)
    if "card" in crafted:
        crafted["card"] = {**crafted["card"], "image_size": 0}
    else:
        crafted["preprocessing"] = {**crafted["preprocessing"], "image_size": 0}
    torch.save(crafted, tmp / "size0.pt")
    with np.load(material["index"]) as arrays:
        index = {k: arrays[k] for k in arrays.files}
    blob = index["faiss"].copy()
    blob[8:40] = 255
    with open(tmp / "blob.index", "wb") as handle:
        np.savez(handle, **{**index, "faiss": blob})
    (tmp / "copy.index").write_bytes(material["index"].read_bytes())
    (tmp / "own.npz").write_bytes(material["emb"].read_bytes())
    (tmp / "own.pt").write_bytes(material["model"].read_bytes())
    document = json.loads(material["calibration"].read_text())
    (tmp / "strcal.json").write_text(json.dumps({**document, "threshold": "high"}))
    return tmp


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_gets_one_line_and_exit_2(case, material, bad_files, capsys):
    before = tree_digest(bad_files)
    argv = [a.format(**{k: str(v) for k, v in material.items()}, tmp=bad_files) for a in CASES[case]]
    code, out, err = run_petkit(capsys, *argv)
    assert one_line_error(code, err), f"{case}: exit {code}\n{err}"
    assert tree_digest(bad_files) == before, f"{case} wrote or changed a file"


def test_error_text_with_brackets_is_printed_as_written(capsys):
    """Rich markup must not eat user text: 'petkit[umap]' or a list such as [0, 1] stay as they are."""
    from petkit.cli.common import fail
    from petkit.errors import PetkitError

    fail(PetkitError("config key 'data.std' is [0, 1] for [red]", "pip install 'petkit[umap]'"))
    err = capsys.readouterr().err
    assert "[0, 1] for [red]" in err and "petkit[umap]" in err
