"""Config from the command line without string round trips: typed flags, one rule for changing a component."""

import subprocess
import sys

import pytest
import torch
import yaml

from petkit.config import Component, _convert, resolve
from petkit.engine.trainer import train_config
from petkit.errors import PetkitError


def test_renaming_a_component_drops_the_old_args_and_keeps_the_new_ones():
    config = resolve(None, ["loss.name=arcface"])  # the default supcon has temperature: arcface must not get it
    assert config.loss == Component("arcface", {})
    config = resolve(None, ["model.backbone.name=scratch_resnet"])  # timm's model/pretrained go
    assert config.model.backbone == Component("scratch_resnet", {})
    config = resolve(None, ["loss.args.margin=0.3", "loss.name=triplet"])
    assert config.loss == Component("triplet", {})  # margin was given for supcon, which is gone
    config = resolve(None, ["loss.name=triplet", "loss.args.margin=0.3", "loss=triplet"])
    assert config.loss == Component("triplet", {"margin": 0.3})  # naming the component it has keeps its args


def test_a_yaml_component_keeps_its_args_when_a_flag_names_it_again(tmp_path):
    path = tmp_path / "real-fake.yaml"
    path.write_text("loss: {name: quadruplet, args: {fake_weight: 0.5}}\n")
    assert train_config(path, flags={"loss": "quadruplet"}).loss == Component("quadruplet", {"fake_weight": 0.5})
    assert train_config(path, flags={"loss": "triplet"}).loss == Component("triplet", {})


def test_backbone_flag_then_overrides_for_it():
    config = train_config(None, ["model.backbone.args.channels=[8, 16]"], backbone="scratch_resnet")
    assert config.model.backbone == Component("scratch_resnet", {"channels": [8, 16]})
    config = train_config(None, ["model.backbone.args.pretrained=true"], backbone="resnet50")
    assert config.model.backbone == Component("timm", {"model": "resnet50", "pretrained": True})
    assert train_config(None, backbone="convnext_atto").model.backbone == Component("timm", {"model": "convnext_atto", "pretrained": "auto"})


def test_text_settings_are_taken_as_written():
    config = resolve(None, ["name=2024-01-01", "data.manifest=data/run #1/manifest.csv", "output_dir=2024"])
    assert (config.name, config.data.manifest, config.output_dir) == ("2024-01-01", "data/run #1/manifest.csv", "2024")
    config = resolve(None, flags={"name": "2024-01-01", "data.manifest": "data/run #1/manifest.csv"})
    assert (config.name, config.data.manifest) == ("2024-01-01", "data/run #1/manifest.csv")
    assert resolve(None, ["data.manifest=null"]).data.manifest is None


def test_union_types_try_every_member():
    assert _convert(int | list[int], [1, 2], "x") == [1, 2]
    assert _convert(int | list[int], 3, "x") == 3
    with pytest.raises(PetkitError, match="'x' must be int or list"):
        _convert(int | list[int], "three", "x")


def test_resume_finds_the_run_config_or_says_why_not(tmp_path):
    with pytest.raises(PetkitError, match="--resume needs --name"):
        train_config(resume=True)
    with pytest.raises(PetkitError, match="nothing to resume"):
        train_config(resume=True, flags={"name": "gone", "output_dir": str(tmp_path)})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("name: r\ntrain: {epochs: 7}\n")
    assert train_config(resume=True, flags={"name": "r", "output_dir": str(tmp_path), "train.epochs": 9}).train.epochs == 9


def test_cli_flags_reach_the_run_as_typed(pets_dir, tmp_path):
    """The user's cases through the command: a path with '#' and a space, a date-like name, a backbone
    flag with overrides for it, and a YAML loss named again by --loss."""
    from petkit.data.prepare import PrepareOptions, prepare

    data = tmp_path / "data" / "run #1"
    prepare(pets_dir, data, PrepareOptions(ratios=(0.5, 0.25, 0.25)))
    config = tmp_path / "cfg.yaml"
    config.write_text("loss: {name: triplet, args: {margin: 0.3}}\nmodel: {backbone: {name: timm, args: {model: resnet10t}}}\n")
    manifest = data / "manifest.csv"
    command = [sys.executable, "-m", "petkit", "train", "--config", str(config), "--loss", "triplet", "--manifest", str(manifest),
               "--name", "2024-01-01", "--output-dir", str(tmp_path / "runs"), "--backbone", "scratch_resnet", "--epochs", "1",
               "model.backbone.args.channels=[8, 16]", "model.backbone.args.depths=[1, 1]", "model.backbone.args.strides=[2, 2]",
               "model.backbone.args.stem_channels=8", "data.image_size=32", "data.sampler.args.p=4", "data.sampler.args.k=2",
               "model.head.args.hidden_dim=16", "model.head.args.embedding_dim=8"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "2024-01-01"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["manifest"] == str(manifest) and saved["name"] == "2024-01-01"
    assert saved["loss"] == {"name": "triplet", "args": {"margin": 0.3}}
    assert saved["model"]["backbone"] == {"name": "scratch_resnet", "args": {"channels": [8, 16], "depths": [1, 1], "strides": [2, 2],
                                                                            "stem_channels": 8}}
    card = torch.load(run / "best.pt", weights_only=True)["card"]
    assert card["backbone"]["args"]["channels"] == [8, 16] and card["embedding_dim"] == 8
