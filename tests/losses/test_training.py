"""Every registered loss trained for real on synthetic pets (it must lift Recall@1 over the untrained model), and the loss-specific training paths."""


import pytest
import torch

from petkit.config import resolve
from petkit.engine import trainer
from petkit.errors import PetkitError
from petkit.registry import LOSSES

SMALL = ["data.image_size=32", "data.sampler.args.p=8", "data.sampler.args.k=4", "model.head.args.hidden_dim=64",
         "model.head.args.embedding_dim=32", "optim.lr=3e-3", "train.early_stopping_patience=null", "train.precision=fp32",
         "model.backbone={name: scratch_resnet, args: {channels: [16, 32, 64], depths: [1, 1, 1], strides: [1, 2, 2], stem_channels: 16}}"]


@pytest.fixture(scope="module")
def closed_set(tmp_path_factory):
    """30 synthetic pets x 10 photos (+2 forged look-alikes each), split by image: val = unseen photos of known pets."""
    from petkit.data.prepare import PrepareOptions, prepare
    from petkit.data.synthetic import generate

    root = tmp_path_factory.mktemp("closed")
    pets = generate(root / "pets", identities=30, images_per_identity=10, size=40, seed=3, fakes_per_identity=2)
    return prepare(pets, root / "data", PrepareOptions(split_by="image", ratios=(0.6, 0.4, 0.0))).manifest_path


def loss_spec(name: str) -> str:
    args = "{losses: [{name: cross_entropy}, {name: center, weight: 0.01}]}" if name == "sum" else "{}"
    return f"loss={{name: {name}, args: {args}}}"


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_lifts_recall_over_the_untrained_model(name, closed_set, tmp_path):
    config = resolve(None, [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=r", *SMALL, "train.epochs=25", loss_spec(name)])
    history = trainer.train(config).history
    untrained, best = history[0]["val_recall@1"], max(row["val_recall@1"] for row in history[1:])
    assert best >= untrained + 0.04, f"{name}: untrained {untrained:.3f}, best {best:.3f}"


def test_classification_losses_report_closed_set_accuracy(closed_set, tmp_path):
    config = resolve(None, [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=c", *SMALL, "train.epochs=20",
                            "loss=cross_entropy", "data.sampler={name: class_balanced, args: {batch_size: 32}}", "train.val_metric=accuracy"])
    result = trainer.train(config)
    accuracy = result.history[-1]["val_accuracy"]
    assert accuracy > 3 / 30  # well above chance over 30 pets
    assert accuracy == pytest.approx(recomputed_accuracy(result.last_checkpoint, closed_set), abs=1e-6)
    with pytest.raises(PetkitError, match="needs a classification loss"):
        trainer.train(resolve(None, [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=c2", *SMALL, "train.val_metric=accuracy"]))


def recomputed_accuracy(checkpoint, manifest_path) -> float:
    """Closed-set accuracy from the saved model and classifier, outside the trainer."""
    from petkit.data import manifest as mf
    from petkit.data.batches import ImageStore
    from petkit.engine.embedder import TorchEmbedder, embed_store
    from petkit.engine.engine import Engine
    from petkit.models.checkpoint import load_checkpoint, read_checkpoint

    manifest = mf.read_manifest(manifest_path)
    train_names = manifest.select("train").real().identities()
    val = manifest.select("val").real()
    loaded = load_checkpoint(checkpoint)
    vectors = torch.from_numpy(embed_store(TorchEmbedder(loaded.model, Engine.create("cpu", "fp32")), ImageStore(val, loaded.card.image_size)))
    loss_state = read_checkpoint(checkpoint)["training"]["loss"]
    weight = torch.nn.functional.normalize(loss_state["classifier.weight"], dim=1)  # a cosine classifier
    predicted = (vectors @ weight.T).argmax(1)
    truth = torch.tensor([train_names.index(name) for name in val.values(mf.IDENTITY)])
    return float((predicted == truth).float().mean())


def test_siamese_pair_mode_trains_contrastive(closed_set, tmp_path):
    config = resolve(None, [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=s", *SMALL, "train.epochs=2",
                            "loss=contrastive", "data.sampler={name: siamese_pairs, args: {pairs_per_batch: 16}}"])
    assert len(trainer.train(config).history) == 3
    config.name, config.miner = "s2", resolve(None, ["miner=batch_hard"]).miner
    with pytest.raises(PetkitError, match="adjacent_pairs miner"):
        trainer.train(config)


def test_quadruplet_needs_fakes_and_other_losses_leave_them_out(closed_set, pets_dir, tmp_path):
    from petkit.data.prepare import PrepareOptions, prepare

    config = resolve(None, [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=q", *SMALL, "train.epochs=1", "loss=quadruplet"])
    assert trainer.train(config).history[-1]["train_loss"] > 0
    plain = prepare(pets_dir, tmp_path / "plain", PrepareOptions()).manifest_path
    config = resolve(None, [f"data.manifest={plain}", f"output_dir={tmp_path}", "name=q2", *SMALL, "loss=quadruplet"])
    with pytest.raises(PetkitError, match="has no is_fake column"):
        trainer.train(config)


def test_accumulation_ema_group_lr_and_resume(closed_set, tmp_path):
    overrides = [f"data.manifest={closed_set}", f"output_dir={tmp_path}", "name=e", *SMALL, "train.accumulate_steps=2",
                 "train.ema_decay=0.9", "optim.group_lr={loss: 0.01, backbone: 0.001}", "loss=arcface", "optim.schedule=constant"]
    first = trainer.train(resolve(None, [*overrides, "train.epochs=1"]))
    from petkit.models.checkpoint import read_checkpoint

    saved = read_checkpoint(first.last_checkpoint)
    training = saved["training"]
    groups = {g["name"]: g["lr"] for g in training["optimizer"]["param_groups"]}
    assert groups["loss"] == pytest.approx(0.01) and groups["backbone"] == pytest.approx(0.001) and groups["head"] == pytest.approx(3e-3)
    batches = -(-first.history[1]["images_per_s"] * first.history[1]["seconds"] // 32)  # images seen / batch size
    assert training["global_step"] == training["scheduler"]["steps"] == -(-batches // 2)  # one step per 2 batches
    assert not torch.equal(saved["model"]["head.0.weight"], training["train_model"]["head.0.weight"])  # EMA differs from raw
    resumed = trainer.train(resolve(None, [*overrides, "train.epochs=2"]), resume=True)
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
