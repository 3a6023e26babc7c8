"""Every registered component of the catalogue, iterated from the registries: backbones, heads,
optimisers, schedules, augmentations, samplers; and every loss lifting Recall@1 in training."""

from collections import Counter

import pytest
import torch

from petkit.config import resolve
from petkit.engine import trainer
from petkit.errors import PetkitError
from petkit.models.backbones import GeM
from petkit.registry import AUGMENTATIONS, BACKBONES, HEADS, LOSSES, OPTIMIZERS, SAMPLERS, SCHEDULES

# ---------------------------------------------------------------------------------------
# backbones and heads


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_backbone_steps_in_fp32_and_bf16(name, dtype):
    torch.manual_seed(0)
    backbone = BACKBONES.build({"name": name})
    module = backbone.module.train()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        features = module(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, backbone.num_features)
    features.float().pow(2).mean().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(backbone.mean) == len(backbone.std) == 3


@pytest.mark.parametrize("name, args", [
    ("scratch_resnet", {"channels": [8, 16], "depths": [1, 2], "strides": [2, 2], "stem_channels": 8, "dropout": [0.0, 0.2]}),
    ("scratch_convnext", {"channels": [8, 16], "depths": [1, 1], "strides": [1, 2], "stem_channels": 8, "pool": "gem"}),
    ("scratch_mobilenet", {"channels": [8, 16], "depths": [1, 2], "strides": [2, 1], "stem_channels": 8, "expand_ratio": 2, "se_ratio": 0.5}),
])
def test_scratch_families_follow_their_stage_settings(name, args):
    backbone = BACKBONES.build({"name": name, "args": args})
    assert backbone.num_features == args["channels"][-1]
    stages = backbone.module.stages
    assert len(stages) == 2
    blocks = [m for m in stages[1] if not isinstance(m, (torch.nn.Dropout2d, torch.nn.Identity))]
    assert len(blocks) >= args["depths"][1]
    assert backbone.module.eval()(torch.rand(1, 3, 32, 32)).shape == (1, args["channels"][-1])


def test_scratch_settings_are_checked():
    with pytest.raises(PetkitError, match="one entry per stage"):
        BACKBONES.build({"name": "scratch_resnet", "args": {"channels": [8, 16], "depths": [1], "strides": [1, 2]}})
    with pytest.raises(PetkitError, match="dropout has 3 entries for 2 stages"):
        BACKBONES.build({"name": "scratch_resnet", "args": {"channels": [8, 16], "depths": [1, 1], "strides": [1, 2], "dropout": [0, 0, 0]}})


def test_freezing_stages_stops_their_gradients_and_batch_norm_statistics():
    backbone = BACKBONES.build({"name": "timm", "args": {"model": "resnet18", "freeze_stages": 2}})
    module = backbone.module.train()
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert any(n.startswith("conv1") for n in frozen) and any(n.startswith("layer2.") for n in frozen)
    assert not any(n.startswith("layer3.") for n in frozen)
    stats_before = module.layer1[0].bn1.running_mean.clone()
    module(torch.rand(4, 3, 32, 32)).sum().backward()
    torch.testing.assert_close(module.layer1[0].bn1.running_mean, stats_before)
    with pytest.raises(PetkitError, match="has 4 stages .layer1, layer2, layer3, layer4."):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet18", "freeze_stages": 5}})


def test_gem_is_average_pooling_at_p1_and_near_max_pooling_at_large_p():
    x = torch.rand(2, 4, 5, 5) + 0.1
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)))
    gem = GeM(p=60.0)
    torch.testing.assert_close(gem(x), x.amax(dim=(2, 3)), atol=0.06, rtol=0)
    backbone = BACKBONES.build({"name": "timm", "args": {"model": "resnet18", "pool": "gem"}})
    assert backbone.module.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)


def test_mlp_head_depth_and_batch_norm_and_bnneck():
    head = HEADS.build({"name": "mlp", "args": {"layers": 3, "hidden_dim": 16, "embedding_dim": 8, "batch_norm": True}}, in_features=12)
    assert sum(isinstance(m, torch.nn.Linear) for m in head) == 3 and sum(isinstance(m, torch.nn.BatchNorm1d) for m in head) == 2
    neck = HEADS.build({"name": "bnneck", "args": {"embedding_dim": 8}}, in_features=12)
    assert not neck.bn.bias.requires_grad and neck(torch.rand(4, 12)).shape == (4, 8)


# ---------------------------------------------------------------------------------------
# optimisers and schedules


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_descends(name):
    weight = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    optimizer = OPTIMIZERS.build({"name": name}, params=[{"params": [weight], "weight_decay": 0.0}], lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        weight.pow(2).sum().backward()
        optimizer.step()
    assert weight.detach().abs().max() < 1.0


def run_schedule(spec, epochs=6, steps=4, metrics=None):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = SCHEDULES.build(spec, optimizer=optimizer, steps_per_epoch=steps, epochs=epochs)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        schedule.epoch_end(metrics[epoch] if metrics else None)
    return lrs, schedule, optimizer


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_gives_finite_positive_rates_and_resumes(name):
    lrs, schedule, optimizer = run_schedule({"name": name}, metrics=[0.1, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert all(0 < lr <= 1.0 + 1e-9 for lr in lrs)
    state = schedule.state_dict()
    other = SCHEDULES.build({"name": name}, optimizer=optimizer, steps_per_epoch=4, epochs=6)
    other.load_state_dict(state)
    assert other.lr_factor() == pytest.approx(schedule.lr_factor())


def test_schedule_shapes():
    lrs, *_ = run_schedule({"name": "step", "args": {"step_epochs": 2, "gamma": 0.5}})
    assert lrs[0] == lrs[7] == 1.0 and lrs[8] == 0.5 and lrs[16] == 0.25
    lrs, *_ = run_schedule({"name": "multistep", "args": {"milestones": [1, 4], "gamma": 0.1}})
    assert lrs[3] == 1.0 and lrs[4] == pytest.approx(0.1) and lrs[16] == pytest.approx(0.01)
    lrs, *_ = run_schedule({"name": "cosine_restarts", "args": {"t0": 2, "t_mult": 2, "min_lr_ratio": 0.0}})
    assert lrs[0] == 1.0 and lrs[7] < 0.1 and lrs[8] == 1.0 and lrs[23] < 0.1  # cycles of 2 then 4 epochs
    lrs, *_ = run_schedule({"name": "warmup_cosine", "args": {"warmup_epochs": 1, "min_lr_ratio": 0.1}})
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] < lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=0.02)
    lrs, *_ = run_schedule({"name": "plateau", "args": {"factor": 0.5, "patience": 1}}, metrics=[0.1, 0.3, 0.2, 0.2, 0.2, 0.2])
    # best at epoch 1; epochs 2, 3 do not improve: more than patience=1 -> halve from epoch 4 on
    assert lrs[15] == 1.0 and lrs[16] == 0.5


# ---------------------------------------------------------------------------------------
# augmentation


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_and_range(name):
    args = {"transforms": [{"name": "RandomResizedCrop", "args": {"scale": [0.5, 1.0]}}, {"name": "RandomErasing", "args": {"p": 1.0}}]} if name == "v2" else {}
    augmentation = AUGMENTATIONS.build({"name": name, "args": args}, image_size=32)
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    out = augmentation(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, images) == (name == "none")


def test_v2_pipeline_errors_are_readable():
    with pytest.raises(PetkitError, match="normalisation lives in the model"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "Normalize"}]}}, image_size=32)
    with pytest.raises(PetkitError, match="'Blurr' is not a torchvision"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "Blurr"}]}}, image_size=32)
    with pytest.raises(PetkitError, match=r"transforms\[0\] ColorJitter"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "ColorJitter", "args": {"brightness": -1}}]}}, image_size=32)


# ---------------------------------------------------------------------------------------
# samplers

LABELS = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 7 + [5] * 4 + [6] * 6


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_shards_disjointly_under_ddp(name):
    whole = SAMPLERS.build({"name": name}, labels=LABELS, seed=3, rank=0, world_size=1)
    whole.set_epoch(2)
    epoch = list(whole)
    shards = []
    for rank in range(3):
        sampler = SAMPLERS.build({"name": name}, labels=LABELS, seed=3, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    positions = [i for rank in range(3) for i in range(rank, len(epoch), 3)]
    assert sorted(positions) == list(range(len(epoch)))  # each batch of the epoch belongs to one rank
    flat = [tuple(b) for s in shards for b in s]
    assert Counter(tuple(b) for b in epoch) <= Counter(flat)  # nothing lost; padding repeats only
    if name == "pk":
        assert {i for b in epoch for i in b} == set(range(len(LABELS)))


def test_class_balanced_sampler_draws_identities_evenly():
    labels = [0] * 200 + [1] * 20 + [2] * 5
    sampler = SAMPLERS.build({"name": "class_balanced", "args": {"batch_size": 50}}, labels=labels, seed=0)
    counts = Counter()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        counts.update(labels[i] for b in sampler for i in b)
    shares = [counts[c] / sum(counts.values()) for c in range(3)]
    assert all(abs(share - 1 / 3) < 0.03 for share in shares)


def test_siamese_pairs_are_adjacent_and_balanced():
    sampler = SAMPLERS.build({"name": "siamese_pairs", "args": {"pairs_per_batch": 5}}, labels=LABELS, seed=1)
    pairs = [(b[i], b[i + 1]) for b in sampler for i in range(0, len(b), 2)]
    assert len(pairs) == len(LABELS) and all(a != b for a, b in pairs)
    positives = sum(LABELS[a] == LABELS[b] for a, b in pairs)
    assert positives == round(0.5 * len(LABELS))
    assert {a for a, _ in pairs} == set(range(len(LABELS)))  # every image anchors one pair per epoch


# ---------------------------------------------------------------------------------------
# training with each loss

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
    from petkit.engine.engine import Engine
    from petkit.engine.inference import embed_store
    from petkit.models.checkpoint import load_checkpoint, read_checkpoint

    manifest = mf.read_manifest(manifest_path)
    train_names = manifest.select("train").real().identities()
    val = manifest.select("val").real()
    loaded = load_checkpoint(checkpoint)
    vectors = torch.from_numpy(embed_store(loaded.model, ImageStore(val, loaded.preprocessing.image_size), Engine.create("cpu", "fp32")))
    loss_state = read_checkpoint(checkpoint)["loss"]
    weight, bias = loss_state["classifier.weight"], loss_state["classifier.bias"]
    predicted = (vectors @ weight.T + bias).argmax(1)
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
    groups = {g["name"]: g["lr"] for g in saved["optimizer"]["param_groups"]}
    assert groups["loss"] == pytest.approx(0.01) and groups["backbone"] == pytest.approx(0.001) and groups["head"] == pytest.approx(3e-3)
    batches = -(-first.history[1]["images_per_s"] * first.history[1]["seconds"] // 32)  # images seen / batch size
    assert saved["ema"]["updates"] == saved["scheduler"]["steps"] == -(-batches // 2)  # one step per 2 batches
    assert not torch.equal(saved["model"]["head.0.weight"], saved["train_model"]["head.0.weight"])  # EMA differs from raw
    resumed = trainer.train(resolve(None, [*overrides, "train.epochs=2"]), resume=True)
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
