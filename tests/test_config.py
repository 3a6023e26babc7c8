import pytest

from petkit.config import Component, Config, apply_override, dump_yaml, from_dict, load_yaml, resolve
from petkit.errors import PetkitError


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    config = resolve()
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(config))
    assert resolve(path) == config


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  seed: 3\noptim:\n  lr: 3e-4\n")
    config = resolve(path, ["train.epochs=2", "data.augment.args.scale=[0.5, 1.0]"])
    assert config.train.epochs == 2 and config.train.seed == 3
    assert config.optim.lr == pytest.approx(3e-4)  # '3e-4' is a string in YAML 1.1
    assert config.data.augment == Component("batched", {"scale": [0.5, 1.0]})


def test_changing_a_component_name_drops_the_old_args(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  name: arcface\n  args: {scale: 16}\n")
    config = resolve(path)
    assert config.loss == Component("arcface", {"scale": 16})  # the default loss's args are gone
    assert resolve(None, ["loss=arcface"]).loss == Component("arcface", {})
    assert resolve(None, ["loss.args.temperature=0.5"]).loss == Component("supcon", {"temperature": 0.5})
    assert resolve(None, ["miner=null"]).miner is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "unknown config key 'train.epoch'; did you mean 'train.epochs'"),
        ("train.epochs=five", "'train.epochs' must be int"),
        ("train.epochs=true", "'train.epochs' must be int"),
        ("train.precision=fp8", "allowed values: auto, fp32, fp16, bf16"),
        ("data.mean=0.5", "'data.mean' must be a list"),
        ("optim.group_lr=3", "'optim.group_lr' must be a mapping"),
        ("miner={args: {margin: 0.3}}", "'miner' is incomplete"),
        ("epochs5", "not of the form key=value"),
    ],
)
def test_errors_name_the_key_and_the_allowed_values(override, message):
    with pytest.raises(PetkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(None, [override])


def test_malformed_yaml_reports_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 5\n   seed: [1\n")
    with pytest.raises(PetkitError, match="not valid YAML at line 3"):
        load_yaml(path)


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(PetkitError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(PetkitError, match="must hold a mapping"):
        load_yaml(path)


def test_component_shorthand_and_nested_override_on_shorthand():
    data = {"miner": "batch_hard"}
    apply_override(data, "miner.args.margin=0.1")
    assert from_dict(data).miner == Component("batch_hard", {"margin": 0.1})
    assert isinstance(from_dict({}), Config)


def test_component_flags_pick_components_with_their_default_args():
    flags = {"loss": "contrastive", "miner": None, "data.sampler": "siamese_pairs", "data.augment": "pet_faces",
             "optim.optimizer": "sgd", "optim.schedule": "plateau"}
    config = resolve(None, flags=flags)
    assert config.loss == Component("contrastive") and config.miner is None
    assert config.data.sampler == Component("siamese_pairs") and config.data.augment == Component("pet_faces")
    assert config.optim.optimizer == Component("sgd") and config.optim.schedule == Component("plateau")
    assert resolve(None, flags={"miner": "batch_hard"}).miner == Component("batch_hard")
