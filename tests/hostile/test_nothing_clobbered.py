"""4. Nothing clobbered, nothing left behind: locks, temporaries, permissions, inputs, restarts, paths."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from petkit.errors import PetkitError
from tests.hostile.conftest import one_line_error, run_petkit

SMALL = ["data.image_size=32", "train.device=cpu", "data.sampler.args={p: 3, k: 2}", "model.backbone.name=scratch_resnet",
         "model.backbone.args={channels: [8, 16], depths: [1, 1], strides: [2, 2], stem_channels: 8}"]


def _config(material, tmp_path, *extra, name="r"):
    from petkit.config import resolve

    return resolve(None, [f"data.manifest={material['manifest']}", f"output_dir={tmp_path / 'runs'}", f"name={name}", "train.epochs=1",
                          *SMALL, *extra])


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(mask, tmp_path):
    from petkit.io import write_text

    old = os.umask(mask)
    try:
        write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~mask


def test_a_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    from petkit.io import write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f".last.pt.{dead}.abc123.tmp").write_bytes(b"x" * 1000)  # a save killed half-way
    (tmp_path / f".last.pt.{os.getpid()}.def456.tmp").write_bytes(b"x")  # a save in progress (this process)
    (tmp_path / ".other.pt.1.zzz.tmp").write_bytes(b"x")  # another target's
    write_text(tmp_path / "last.pt", "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([".other.pt.1.zzz.tmp", f".last.pt.{os.getpid()}.def456.tmp", "last.pt"])


def test_two_trainings_of_one_run_folder_never_interleave(material, tmp_path):
    from petkit.engine.trainer import Trainer
    from petkit.io import RunLock

    config = _config(material, tmp_path)
    held = RunLock(config.run_dir, "petkit train")  # another train holding the folder
    try:
        with pytest.raises(PetkitError, match=f"in use by another petkit train \\(pid {os.getpid()}\\)"):
            Trainer(config)
    finally:
        held.release()
    assert not config.run_dir.exists()  # released and nothing written: the folder went with the lock
    result = Trainer(config).fit()
    assert result.best_checkpoint.is_file() and not (config.run_dir / ".lock").exists()


def test_two_processes_racing_for_one_run_folder(material, tmp_path):
    """The real race: two 'petkit train --name X' started together; exactly one trains, the other says why."""
    argv = [sys.executable, "-m", "petkit", "train", "--manifest", str(material["manifest"]), "--output-dir", str(tmp_path / "runs"),
            "--name", "x", "--epochs", "1", *SMALL]
    first, second = (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another petkit train" in loser or "already exists" in loser


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(material, tmp_path):
    from petkit.engine.trainer import train

    config = _config(material, tmp_path)
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "config.yaml").write_text("name: r\n")  # what a run killed while loading leaves
    (config.run_dir / "train.log").write_text("loading\n")
    with pytest.raises(PetkitError, match="nothing to resume"):
        train(config, resume=True)
    result = train(config)
    assert result.best_checkpoint.is_file()
    assert "holds no checkpoint" in (config.run_dir / "train.log").read_text()


def test_resume_refuses_other_images_and_records_changed_settings(material, tmp_path):
    from petkit.data import manifest as mf
    from petkit.engine.trainer import train

    config = _config(material, tmp_path)
    train(config)
    config.train.epochs, config.optim.lr = 2, 0.01
    result = train(config, resume=True)
    log = (config.run_dir / "train.log").read_text()
    assert "changed settings: optim.lr 0.001 -> 0.01; train.epochs 1 -> 2" in log
    assert "resumed with optim.lr 0.001 -> 0.01" in (config.run_dir / "history.csv").read_text()
    assert result.history[-1]["epoch"] == 2

    manifest = mf.read_manifest(material["manifest"])
    rows = [dict(r, identity=("pet_001" if r[mf.IDENTITY] == "pet_000" else r[mf.IDENTITY])) for r in manifest.rows]
    other = tmp_path / "other.csv"
    mf.write_manifest(other, [dict(r, path=str(manifest.abspath(r))) for r in rows], manifest.columns)
    config.data.manifest, config.train.epochs = str(other), 3
    with pytest.raises(PetkitError, match="the train or val images differ"):
        train(config, resume=True)


def test_prepare_never_overwrites_the_listing_it_reads(material, tmp_path, capsys):
    listing = tmp_path / "manifest.csv"
    text = f"path,identity\n{material['photo']},a\n{material['photos'] / 'pet_001' / 'pet_001_00.jpg'},b\n"
    listing.write_text(text)
    code, _, err = run_petkit(capsys, "prepare", listing, "-o", tmp_path, "--overwrite")
    assert one_line_error(code, err) and "is an input of this command" in err, err
    assert listing.read_text() == text


def test_an_index_finds_its_model_from_any_working_directory(material, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "deploy"
    folder.mkdir()
    monkeypatch.chdir(material["root"])
    code, _, err = run_petkit(capsys, "index", "build", material["emb"].name, "-o", folder / "g.index")
    assert code == 0, err
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    monkeypatch.chdir(moved)
    code, out, err = run_petkit(capsys, "search", folder / "g.index", material["photo"], "--device", "cpu")
    assert code == 0 and "pet_000" in out, err


def test_search_reports_a_corrupt_photo_and_answers_the_rest(material, tmp_path, capsys):
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(material["photo"], queries / "good.jpg")
    (queries / "broken.jpg").write_bytes(material["photo"].read_bytes()[:200])
    code, out, err = run_petkit(capsys, "search", material["index"], queries, "--device", "cpu", "-o", tmp_path / "hits.csv")
    assert code == 0, err
    assert "skipped:" in err and "broken.jpg" in err and "skipped 1 that could not be decoded" in out
    hits = (tmp_path / "hits.csv").read_text()
    assert "good.jpg" in hits and "broken.jpg" not in hits


def test_prepare_and_the_reader_share_one_rule_for_names_and_sizes(tmp_path, material):
    from PIL import Image

    from petkit.data import manifest as mf
    from petkit.data.images import load_tensor
    from petkit.data.prepare import prepare

    src = tmp_path / "src"
    shutil.copytree(material["photos"], src)
    for name in ("new\nline.jpg", "sep\u2028arator.jpg", "tab\tname.jpg"):
        shutil.copy(material["photo"], src / "pet_000" / name)
    Image.new("L", (12000, 12000)).save(src / "pet_001" / "bomb.png")  # 144 Mpx, a few hundred KB
    result = prepare(src, tmp_path / "out")
    excluded = {e["path"]: e["reason"] for e in result.report["excluded"]}
    assert sum("control character" in r for r in excluded.values()) == 3
    assert "too large" in excluded["pet_001/bomb.png"]
    assert len(mf.read_manifest(result.manifest_path)) == 6  # what prepare writes, its reader reads
    with pytest.raises(PetkitError, match="refused: .*exceeds"):
        load_tensor(src / "pet_001" / "bomb.png", 32)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(material, tmp_path):
    """A real write failure: the kernel refuses writes past RLIMIT_FSIZE (EFBIG), as a full disk would (ENOSPC)."""
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)); from petkit.cli import main; main(sys.argv[1:])")
    out = tmp_path / "big.npz"
    result = subprocess.run([sys.executable, "-c", script, "embed", str(material["model"]), str(material["photos"]), "-o", str(out),
                             "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "file too large" in result.stderr or "no space" in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary
    run = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-c", script.replace("2048", str(200_000)), "train", "--manifest", str(material["manifest"]),
                             "--output-dir", str(run), "--name", "r", "--epochs", "1", *SMALL], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write checkpoint" in result.stderr or "file too large" in result.stderr
    assert not any(p.name.endswith(".tmp") for p in Path(run).rglob("*"))


def test_a_utf16_manifest_with_a_bom_reads_like_utf8(material, tmp_path):
    from petkit.data import manifest as mf

    text = f"path,identity\n{material['photo']},Müller\n"
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    (tmp_path / "b.csv").write_text(text, encoding="utf-16")  # Excel's 'Unicode text' writes a BOM
    assert mf.read_manifest(tmp_path / "a.csv").rows == mf.read_manifest(tmp_path / "b.csv").rows


def test_the_cli_summary_says_when_training_made_the_model_worse(material, tmp_path, monkeypatch, capsys):
    from petkit.engine import trainer as T

    scores = iter([0.9, 0.5])
    monkeypatch.setattr(T.Trainer, "validate", lambda self, trained=False: {f"val_{k}": 0.0 for k in T.VAL_METRICS}
                        | {"val_recall@1": next(scores)})
    monkeypatch.setattr(T.Trainer, "has_validation", property(lambda self: True))
    code, out, err = run_petkit(capsys, "train", "--manifest", material["manifest"], "--output-dir", tmp_path, "--name", "w",
                                "--epochs", "1", *SMALL)
    assert code == 0 and "every trained epoch scored below the untrained model" in err, err


def test_resume_with_a_loss_state_of_another_shape_is_one_line(material, tmp_path):
    """A run written by an older petkit whose loss had other parameters (cross_entropy was linear)."""
    import torch

    from petkit.engine.trainer import train

    config = _config(material, tmp_path, "loss=cross_entropy", "data.sampler={name: class_balanced, args: {batch_size: 6}}")
    train(config)
    state = torch.load(config.run_dir / "last.pt", weights_only=True)
    state["training"]["loss"] = {"classifier.weight": torch.zeros(3, 128), "classifier.bias": torch.zeros(3)}
    torch.save(state, config.run_dir / "last.pt")
    config.train.epochs = 2
    with pytest.raises(PetkitError, match="its loss or optimiser state does not fit"):
        train(config, resume=True)
