"""pretrained: auto, the run default: weights when they can be had (then the fine-tuning recipe), a warning when not."""

from __future__ import annotations

import pytest
import timm
import torch

from petkit.config import resolve
from petkit.engine import trainer
from petkit.models.checkpoint import read_checkpoint

SMALL = ["model.backbone.args.model=resnet10t", "data.sampler.args.p=4", "data.sampler.args.k=2", "train.epochs=1",
         "model.head.args.hidden_dim=32", "model.head.args.embedding_dim=16"]


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


def test_offline_auto_warns_trains_from_scratch_and_records_it(prepared, tmp_path, empty_hub_cache):
    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=auto", *SMALL])
    assert config.model.backbone.args["pretrained"] == "auto" and config.data.image_size is None  # the defaults
    result = trainer.train(config)
    assert "starts from random weights" in result.warnings[0]  # (a one-epoch run may add the below-untrained warning)
    assert "pretrained weights for 'resnet10t' unavailable" in result.warnings[0]
    log = (result.run_dir / "train.log").read_text()
    assert "warning: the backbone starts from random weights" in log
    for path in (result.best_checkpoint, result.last_checkpoint):
        assert read_checkpoint(path)["initialisation"].startswith("random (pretrained weights for 'resnet10t' unavailable")
    saved = read_checkpoint(result.last_checkpoint)["config"]
    assert saved["data"]["image_size"] == 112 and saved["train"]["batch_norm"] == "train" and saved["optim"]["backbone_lr_ratio"] == 1.0
    assert "image_size: 112" in (result.run_dir / "config.yaml").read_text()


def test_explicit_false_is_quiet_and_true_without_weights_fails(prepared, tmp_path, empty_hub_cache):
    from petkit.errors import PetkitError

    quiet = trainer.train(resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=off", *SMALL,
                                         "model.backbone.args.pretrained=false", "data.image_size=32"]))
    assert not any("random weights" in w for w in quiet.warnings)
    with pytest.raises(PetkitError, match="could not fetch 'resnet10t'"):
        trainer.train(resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=on", *SMALL,
                                     "model.backbone.args.pretrained=true"]))


def test_loaded_weights_switch_on_the_recipe(prepared, tmp_path, empty_hub_cache):
    """Weights from a file: the weights' input size, backbone at a tenth of the lr, batch-norm statistics kept."""
    torch.manual_seed(5)
    source = timm.create_model("resnet10t", num_classes=0)
    for layer in source.modules():  # statistics a P x K batch would visibly change
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
    weights = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), weights)
    expected_size = int(source.pretrained_cfg["input_size"][-1])
    seen = {}

    class Spy(trainer.Callback):
        def on_fit_start(self, t):
            seen["groups"] = {g["name"]: base for g, base in zip(t.optimizer.param_groups, t.scheduler.base_lrs)}  # before warm-up
            seen["size"] = t.model.card.image_size

    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=pre", *SMALL,
                            f"model.backbone.args.weights={weights}", "optim.lr=0.002"])
    result = trainer.train(config, callbacks=[Spy()])
    assert not any("random weights" in w for w in result.warnings)
    assert seen["size"] == expected_size
    assert seen["groups"]["backbone"] == pytest.approx(0.0002) and seen["groups"]["head"] == pytest.approx(0.002)
    assert read_checkpoint(result.best_checkpoint)["initialisation"] == f"weights file {weights}"
    trained = read_checkpoint(result.best_checkpoint)["model"]
    start = source.state_dict()
    stats = [k for k in start if k.endswith("running_mean")]
    assert all(torch.equal(trained[f"backbone.{k}"], start[k]) for k in stats)  # statistics kept
    assert not torch.equal(trained["backbone.conv1.1.weight"], start["conv1.1.weight"])  # affine weights still learn
    log = (result.run_dir / "train.log").read_text()
    assert "fine-tuning recipe" in log and "head started from the backbone's features (whitened PCA of" in log

    # every part of the recipe yields to an explicit setting
    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=own", *SMALL,
                            f"model.backbone.args.weights={weights}", "data.image_size=32", "train.batch_norm=train",
                            "optim.backbone_lr_ratio=1.0"])
    result = trainer.train(config, callbacks=[Spy()])
    assert seen["size"] == 32 and seen["groups"]["backbone"] == seen["groups"]["head"]
    trained = read_checkpoint(result.best_checkpoint)["model"]
    assert not all(torch.equal(trained[f"backbone.{k}"], start[k]) for k in stats)
