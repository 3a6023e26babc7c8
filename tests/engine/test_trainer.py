"""The training loop's bookkeeping: best checkpoint, early stopping, resume guards."""

import csv

import pytest
import torch

from petkit.config import resolve
from petkit.engine import trainer
from petkit.errors import PetkitError
from petkit.models.checkpoint import read_checkpoint

FAST = ["data.image_size=32", "model.backbone.args.model=resnet10t", "data.sampler.args.p=4", "data.sampler.args.k=2",
        "model.head.args.hidden_dim=32", "model.head.args.embedding_dim=16"]


def config_for(prepared, tmp_path, *extra):
    return resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=t", *FAST, *extra])


def test_best_checkpoint_and_early_stopping_follow_the_val_metric(prepared, tmp_path, monkeypatch):
    scores = iter([0.10, 0.50, 0.40, 0.45, 0.30, 0.90])  # epoch 0 (untrained), then epochs 1..5

    def fake_validate(self, trained=False):
        return {f"val_{k}": 0.0 for k in trainer.VAL_METRICS} | {"val_recall@1": next(scores)}

    monkeypatch.setattr(trainer.Trainer, "validate", fake_validate)
    result = trainer.train(config_for(prepared, tmp_path, "train.epochs=5", "train.early_stopping_patience=2"))
    assert result.stopped_early and [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    assert result.best_metric == 0.50
    assert read_checkpoint(result.last_checkpoint)["training"]["epoch"] == 3
    assert "training" not in read_checkpoint(result.best_checkpoint)  # best.pt: card and weights only
    best_weights = read_checkpoint(result.best_checkpoint)["model"]["head.0.weight"]
    assert not torch.equal(best_weights, read_checkpoint(result.last_checkpoint)["model"]["head.0.weight"])  # epoch 1, not 3
    rows = list(csv.DictReader((result.run_dir / "history.csv").open()))
    assert [float(r["val_recall@1"]) for r in rows] == [0.10, 0.50, 0.40, 0.45]
    assert "early stop" in (result.run_dir / "train.log").read_text()


def test_without_val_split_the_last_epoch_is_best(pets_dir, tmp_path):
    from petkit.data.prepare import PrepareOptions, prepare

    manifest = prepare(pets_dir, tmp_path / "data", PrepareOptions(split_by="none")).manifest_path
    result = trainer.train(config_for(manifest, tmp_path / "runs", "train.epochs=1"))
    assert [row["epoch"] for row in result.history] == [1]
    assert torch.equal(read_checkpoint(result.best_checkpoint)["model"]["head.0.weight"],
                       read_checkpoint(result.last_checkpoint)["model"]["head.0.weight"])


def test_resume_refuses_a_different_model(prepared, tmp_path):
    trainer.train(config_for(prepared, tmp_path, "train.epochs=1"))
    with pytest.raises(PetkitError, match="differs from the one it was trained with"):
        trainer.train(config_for(prepared, tmp_path, "train.epochs=2", "model.head.args.embedding_dim=8"), resume=True)
    with pytest.raises(PetkitError, match="nothing to resume"):
        trainer.train(config_for(prepared, tmp_path / "other", "train.epochs=2"), resume=True)


def test_unknown_val_metric_fails_before_training(prepared, tmp_path):
    with pytest.raises(PetkitError, match="train.val_metric 'accuracy'"):
        trainer.train(config_for(prepared, tmp_path, "train.val_metric=accuracy"))
    assert not (tmp_path / "t").exists()


def test_callbacks_see_every_epoch_and_the_log_follows_the_val_metric(prepared, tmp_path):
    from petkit.engine.callbacks import Callback

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer):
            self.events.append(("start", (trainer.run_dir / "config.yaml").is_file()))

        def on_epoch_end(self, trainer, row):
            self.events.append(("epoch", row["epoch"], trainer.best_path.exists() or row["epoch"] == 0))

        def on_fit_end(self, trainer, result):
            self.events.append(("end", len(result.history)))

    recorder = Recorder()
    result = trainer.train(config_for(prepared, tmp_path, "train.epochs=2", "train.val_metric=mAP@R"), callbacks=[recorder])
    assert recorder.events == [("start", True), ("epoch", 0, True), ("epoch", 1, True), ("epoch", 2, True), ("end", 3)]
    log = (result.run_dir / "train.log").read_text()
    assert "val_mAP@R=" in log and "val_recall@1" not in log and result.val_metric == "mAP@R"


def test_tensorboard_logger_writes_the_epoch_scalars(prepared, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = trainer.train(config_for(prepared, tmp_path, "train.epochs=2", "train.loggers=[tensorboard]"))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    recall = [(e.step, e.value) for e in events.Scalars("epoch/val_recall@1")]
    history = list(csv.DictReader((result.run_dir / "history.csv").open()))
    assert [step for step, _ in recall] == [0, 1, 2]
    assert [round(v, 4) for _, v in recall] == [round(float(r["val_recall@1"]), 4) for r in history]
    with pytest.raises(PetkitError, match="unknown logger"):
        trainer.train(config_for(prepared, tmp_path, "name=x", "train.loggers=[wandb]"))


def test_fakes_are_left_out_before_the_sampler_is_built(tmp_path):
    from petkit.data.prepare import PrepareOptions, prepare
    from petkit.data.synthetic import generate

    pets = generate(tmp_path / "pets", identities=6, images_per_identity=4, size=32, seed=2, fakes_per_identity=1)
    manifest = prepare(pets, tmp_path / "data", PrepareOptions(split_by="none")).manifest_path
    run = trainer.Trainer(config_for(manifest, tmp_path / "runs", "train.epochs=1"))
    run.setup()
    assert len(run.train_rows) == 24 and len(run.labels) == 24 and run.is_fake is None
    assert max(i for batch in run.sampler for i in batch) < 24
    quad = trainer.Trainer(config_for(manifest, tmp_path / "runs2", "train.epochs=1", "loss=quadruplet"))
    quad.setup()
    assert len(quad.train_rows) == 30 and int(quad.is_fake.sum()) == 6 and len(quad.identities) == 6


def test_steps_csv_records_every_batch_and_survives_a_resume(prepared, tmp_path):
    """steps.csv: one row per batch with its loss and learning rate; a resume keeps the checkpointed epochs' rows."""
    from petkit.engine.trainer import train

    overrides = [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=s", "train.epochs=2", "data.image_size=32",
                 "train.device=cpu", "data.sampler.args={p: 4, k: 2}", "model.backbone.name=scratch_resnet",
                 "model.backbone.args={channels: [8, 16], depths: [1, 1], strides: [2, 2], stem_channels: 8}"]
    config = resolve(None, overrides)
    result = train(config)
    rows = list(csv.DictReader((result.run_dir / "steps.csv").open()))
    batches = len(rows) // 2
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [int(r["epoch"]) for r in rows] == [1] * batches + [2] * batches
    last_lr = [float(r["lr"]) for r in rows if int(r["batch"]) == batches]
    assert last_lr == pytest.approx([h["lr"] for h in result.history if h["epoch"] > 0], rel=1e-5)  # the epoch's last LR
    assert all(float(r["loss"]) > 0 for r in rows)
    config.train.epochs = 3
    train(config, resume=True)
    again = list(csv.DictReader((result.run_dir / "steps.csv").open()))
    assert again[: len(rows)] == rows and [int(r["epoch"]) for r in again[len(rows):]] == [3] * batches


def test_early_stopping_min_delta_ignores_gains_too_small_but_best_pt_follows_them(prepared, tmp_path, monkeypatch):
    scores = iter([0.1, 0.5, 0.505, 0.51, 0.6])

    def fake_validate(self, trained=False):
        return {f"val_{k}": 0.0 for k in trainer.VAL_METRICS} | {"val_recall@1": next(scores)}

    monkeypatch.setattr(trainer.Trainer, "validate", fake_validate)
    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=d", "train.epochs=4", "data.image_size=32",
                            "train.device=cpu", "data.sampler.args={p: 4, k: 2}", "train.early_stopping_patience=2",
                            "train.early_stopping_min_delta=0.02"])
    result = trainer.train(config)
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]  # 0.505 and 0.51 gain < 0.02: stopped before 0.6
    assert result.stopped_early and result.best_metric == pytest.approx(0.51)  # best.pt is still the best epoch
