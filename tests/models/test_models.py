"""EmbeddingModel, its model card and checkpoints: built from the card alone, round trips, old files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from petkit.config import Component, ModelConfig, resolve, to_dict
from petkit.errors import PetkitError
from petkit.models.card import ModelCard, fingerprint
from petkit.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from petkit.models.model import build_model, model_from_card
from petkit.registry import BACKBONES, HEADS

TINY = ModelConfig(Component("timm", {"model": "resnet10t"}), Component("mlp", {"hidden_dim": 32, "embedding_dim": 16}))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_declares_the_width_it_outputs(name):
    model = build_model(ModelConfig(TINY.backbone, Component(name)), 32).eval()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, model.embedding_dim) == (2, model.card.embedding_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert model.card.image_size == 32 and len(model.card.mean) == 3 and model.card.head["name"] == name


def test_unknown_timm_model_and_offline_pretrained_errors(tmp_path):
    with pytest.raises(PetkitError, match="unknown timm model 'resnet181'; did you mean"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet181"}})
    with pytest.raises(PetkitError, match="backbone weights not found"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "w.pth")}})


def test_local_backbone_weights_are_loaded(tmp_path):
    source = BACKBONES.build({"name": "timm", "args": {"model": "resnet10t"}}).module
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "w.pth")}}).module
    assert fingerprint(loaded.state_dict()) == fingerprint(source.state_dict())
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(PetkitError, match="cannot be matched"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "other.pth")}})


def test_the_card_round_trips_and_rebuilds_the_architecture():
    model = build_model(TINY, 40, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    card = model.current_card()
    again = ModelCard.from_dict(card.to_dict(), "here")
    assert again == card and ModelCard.from_metadata(card.to_metadata(), "here") == card
    rebuilt = model_from_card(card)
    assert set(rebuilt.state_dict()) == set(model.state_dict()) and rebuilt.card.image_size == 40
    with pytest.raises(PetkitError, match="unreadable model card"):
        ModelCard.from_dict({"image_size": 32}, "broken.pt")


def test_checkpoint_round_trip_best_is_card_and_weights_only(tmp_path):
    config = resolve(None, ["model.backbone.args.model=resnet10t", "model.head.args.embedding_dim=16"])
    model = build_model(config.model, 32).eval()
    card = save_checkpoint(tmp_path / "best.pt", model)
    assert set(torch.load(tmp_path / "best.pt", weights_only=True)) == {"format", "version", "petkit_version", "card", "model"}
    save_checkpoint(tmp_path / "last.pt", model, to_dict(config), {"epoch": 3})
    for name in ("best.pt", "last.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.fingerprint == card.fingerprint == fingerprint(loaded.model.state_dict())
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(loaded.model(x), model(x))
    assert load_checkpoint(tmp_path / "last.pt").state["training"]["epoch"] == 3 and load_checkpoint(tmp_path / "best.pt").config is None


def test_foreign_damaged_mismatched_and_tampered_checkpoints_are_refused(tmp_path):
    model = build_model(TINY, 32).eval()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(PetkitError, match="not a petkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(PetkitError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    state = torch.load(path, weights_only=True)
    state["card"]["head"]["args"]["embedding_dim"] = 8  # weights no longer fit the card
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(PetkitError, match="belongs to a different model"):
        load_checkpoint(tmp_path / "mismatch.pt")
    state = torch.load(path, weights_only=True)
    state["model"]["head.0.weight"] = torch.zeros_like(state["model"]["head.0.weight"])  # replaced weights, old fingerprint
    torch.save(state, tmp_path / "tampered.pt")
    with pytest.raises(PetkitError, match="do not match the fingerprint"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "petkit.checkpoint", "version": 2, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(PetkitError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_petkit_0_1_0_checkpoint_loads_and_embeds_to_the_same_vectors():
    """tests/fixtures/checkpoint-v0.1.0.pt was written by petkit 0.1.0 (commit ece766a), before the model card;
    its config has train.* fields of that schema, which loading must not depend on."""
    from petkit.data.batches import ImageStore
    from petkit.data.sources import open_source
    from petkit.engine.embedder import TorchEmbedder, embed_store
    from petkit.engine.engine import Engine

    loaded = load_checkpoint(FIXTURES / "checkpoint-v0.1.0.pt")
    reference = np.load(FIXTURES / "checkpoint-v0.1.0.vectors.npz")
    assert loaded.fingerprint == str(reference["fingerprint"]) and loaded.card.backbone["name"] == "scratch_resnet"
    manifest = open_source(FIXTURES / "fixture-photos")
    assert [r["path"] for r in manifest.rows] == reference["paths"].tolist()
    vectors = embed_store(TorchEmbedder(loaded.model, Engine.create("cpu", "fp32")), ImageStore(manifest, loaded.card.image_size, cache=False))
    np.testing.assert_allclose(vectors, reference["vectors"], atol=1e-5)
