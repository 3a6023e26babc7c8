"""The six commands end to end through the CLI, plus the CLI's error contract."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from petkit import embeddings as emb
from petkit.cli import _register_commands, app
from tests.conftest import tree_digest

_register_commands()
runner = CliRunner()
FAST = ["--image-size", "32", "model.backbone.args.model=resnet10t", "data.sampler.args.p=4", "data.sampler.args.k=2",
        "model.head.args.hidden_dim=64", "model.head.args.embedding_dim=32"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "petkit", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def trained(pets_dir, tmp_path_factory):
    """prepare + 2 epochs of train through the CLI: (manifest, run_dir, train output)."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    run("prepare", pets_dir, "-o", data, "--ratios", "0.5,0.25,0.25", "--gallery-per-identity", "1")
    out = run("train", "--manifest", data / "manifest.csv", "--output-dir", root / "runs", "--name", "e2e", "--epochs", "2", *FAST)
    return data / "manifest.csv", root / "runs" / "e2e", out


@pytest.mark.slow
def test_pipeline_end_to_end(trained, pets_dir, tmp_path):
    before = tree_digest(pets_dir)
    manifest, run_dir, out = trained
    assert {"config.yaml", "best.pt", "last.pt", "history.csv", "steps.csv", "train.log", "report"} <= {p.name for p in run_dir.iterdir()}
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [row["epoch"] for row in history] == ["0", "1", "2"]  # epoch 0: the untrained model
    assert "best checkpoint" in out
    curves = json.loads((run_dir / "report" / "figures" / "training.json").read_text())["data"]  # train ends with its curves
    assert curves["epochs"] == [0, 1, 2] and len(curves["steps"]["step"]) == len(list(csv.DictReader((run_dir / "steps.csv").open())))

    run("embed", run_dir / "best.pt", manifest, "-o", tmp_path / "all.npz")
    run("embed", run_dir / "best.pt", manifest, "--split", "test", "-o", tmp_path / "test.npz", "--flip-tta")
    test = emb.load(tmp_path / "test.npz")
    assert set(test.columns["splits"]) == {"test"}
    np.testing.assert_allclose(np.linalg.norm(test.vectors, axis=1), 1, atol=1e-5)

    run("evaluate", tmp_path / "test.npz", "-o", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = {m["name"]: m for m in metrics["metrics"]}
    for name in ("recall@1", "recall@3", "recall@5", "recall@10", "top3_accuracy", "mAP", "mAP@R", "roc_auc", "eer"):
        assert name in names and 0 <= names[name]["value"] <= 1
    assert names["recall@1"]["protocol"] == "retrieval/query-gallery" and names["roc_auc"]["pairs"] > 0

    run("submit", tmp_path / "all.npz", "--query-split", "test", "--gallery-split", "train", "--id-from", "path", "-o", tmp_path / "sub.csv")
    rows = list(csv.reader((tmp_path / "sub.csv").open()))
    columns = emb.load(tmp_path / "all.npz").columns
    test_queries = (columns["splits"] == "test") & (columns["roles"] != "gallery")  # gallery images are not queries
    assert rows[0] == ["image", "pred"] and len(rows) - 1 == int(test_queries.sum())
    assert all(len(r[1].split(" ")) == 3 for r in rows[1:])

    out = run("export-onnx", run_dir / "best.pt", "-o", tmp_path / "model.onnx")
    assert "max |diff|" in out
    parity = json.loads((tmp_path / "model.onnx.parity.json").read_text())
    assert parity["passed"] and parity["samples"] > 0
    run("embed", tmp_path / "model.onnx", manifest, "--split", "test", "-o", tmp_path / "onnx.npz")
    onnx_set, torch_set = emb.load(tmp_path / "onnx.npz"), emb.load(tmp_path / "test.npz")
    assert onnx_set.fingerprint == torch_set.fingerprint
    run("embed", run_dir / "best.pt", manifest, "--split", "test", "--precision", "fp32", "-o", tmp_path / "fp32.npz")
    cosine = np.sum(onnx_set.vectors * emb.load(tmp_path / "fp32.npz").vectors, axis=1)
    assert cosine.min() > 0.999

    out = run("train", "--resume", "--name", "e2e", "--output-dir", run_dir.parent, "--epochs", "3")
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [row["epoch"] for row in history] == ["0", "1", "2", "3"]
    assert tree_digest(pets_dir) == before


def test_unknown_loss_is_one_line_listing_the_losses(prepared):
    result = run_cli("train", "--loss", "nonsense", "--manifest", prepared)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert re.fullmatch(r"error: unknown loss 'nonsense'; available: arcface, (.+, )?triplet.*", lines[0])
    assert lines[1].startswith("hint:") and "Traceback" not in result.stderr
    debug = run_cli("--debug", "train", "--loss", "nonsense", "--manifest", prepared)
    assert "Traceback" in debug.stderr


def test_errors_for_bad_paths_and_existing_outputs(prepared, tmp_path):
    result = run_cli("embed", tmp_path / "missing.pt", prepared, "-o", tmp_path / "e.npz")
    assert result.returncode == 2 and "checkpoint not found" in result.stderr
    (tmp_path / "taken.json").write_text("{}")
    result = run_cli("evaluate", tmp_path / "x.npz", "-o", tmp_path / "taken.json")
    assert "output already exists" in result.stderr and (tmp_path / "taken.json").read_text() == "{}"


def test_existing_run_is_not_overwritten(prepared, tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "notes.txt").write_text("mine")
    result = run_cli("train", "--manifest", prepared, "--output-dir", tmp_path / "runs", "--name", "r")
    assert "already exists" in result.stderr and (tmp_path / "runs" / "r" / "notes.txt").read_text() == "mine"


def test_corrupt_jpeg_is_reported_and_source_unchanged(pets_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(pets_dir, src)
    victim = next((src / "pet_000").iterdir())
    victim.write_bytes(victim.read_bytes()[:200])
    before = tree_digest(src)
    out = run("prepare", src, "-o", tmp_path / "out")
    assert "corrupt or truncated" in out and tree_digest(src) == before


@pytest.mark.parametrize("command", ["prepare", "train", "embed", "evaluate", "submit", "export-onnx", "synth", "demo", "plugins list"])
def test_every_command_has_help_with_an_example(command):
    output = run(*command.split(), "--help")
    assert "Usage" in output and "Example" in output


def test_plugins_list_shows_every_kind():
    output = run("plugins", "list")
    for word in ("backbones", "losses", "miners", "samplers", "datasets", "evaluators", "submissions", "triplet", "arcface", "petkit"):
        assert word in output


def test_submit_options_shape_the_csv(trained, pets_dir, tmp_path):
    manifest, run_dir, _ = trained
    run("embed", run_dir / "best.pt", manifest, "-o", tmp_path / "all.npz", "--batch-size", "3", "--workers", "1")
    run("embed", run_dir / "best.pt", pets_dir, "-o", tmp_path / "folder.npz")
    assert len(set(emb.load(tmp_path / "folder.npz").identities)) == 8  # a plain identity-folder tree works too
    run("submit", tmp_path / "all.npz", "--query-split", "test", "--gallery-split", "train", "--id-from", "stem",
        "--top-k", "2", "--columns", "id,label", "--delimiter", ";", "-o", tmp_path / "s.csv")
    rows = list(csv.reader((tmp_path / "s.csv").open(), delimiter=";"))
    assert rows[0] == ["id", "label"] and all(len(r[1].split(" ")) == 2 and "." not in r[0] for r in rows[1:])
    result = run_cli("submit", tmp_path / "all.npz", "--format", "kaggle", "-o", tmp_path / "t.csv")
    assert "unknown submission 'kaggle'" in result.stderr and not (tmp_path / "t.csv").exists()


def test_batch_size_does_not_change_embeddings(trained, tmp_path):
    manifest, run_dir, _ = trained
    for size in (1, 64):
        run("embed", run_dir / "best.pt", manifest, "--precision", "fp32", "--batch-size", size, "-o", tmp_path / f"b{size}.npz")
    np.testing.assert_allclose(emb.load(tmp_path / "b1.npz").vectors, emb.load(tmp_path / "b64.npz").vectors, atol=1e-4)


def test_export_fails_above_tolerance_and_writes_nothing(trained, tmp_path):
    manifest, run_dir, _ = trained
    result = run_cli("export-onnx", run_dir / "best.pt", "-o", tmp_path / "m.onnx", "--atol", "0", "--images", manifest, "--samples", "4")
    assert result.returncode == 2 and "ONNX output differs from PyTorch" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_evaluate_single_protocol_and_unknown_protocol(trained, tmp_path):
    manifest, run_dir, _ = trained
    run("embed", run_dir / "best.pt", manifest, "--split", "val", "-o", tmp_path / "v.npz")
    run("evaluate", tmp_path / "v.npz", "--protocol", "verification", "-o", tmp_path / "m.json")
    names = [m["name"] for m in json.loads((tmp_path / "m.json").read_text())["metrics"]]
    assert names[:4] == ["roc_auc", "eer", "eer_threshold", "best_accuracy"]
    assert [n for n in names if n.startswith("tar@far=")] == ["tar@far=0.0001", "tar@far=0.001", "tar@far=0.01", "tar@far=0.1"]
    result = run_cli("evaluate", tmp_path / "v.npz", "--protocol", "retrival", "-o", tmp_path / "n.json")
    assert "did you mean 'retrieval'" in result.stderr
