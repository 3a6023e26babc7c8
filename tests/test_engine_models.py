import pytest
import torch

from petkit.config import Component, ModelConfig, resolve
from petkit.engine.engine import Engine, resolve_precision
from petkit.errors import PetkitError
from petkit.models.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from petkit.models.model import build_model
from petkit.registry import BACKBONES, HEADS, SCHEDULES

TINY = ModelConfig(Component("timm", {"model": "resnet10t"}), Component("mlp", {"hidden_dim": 32, "embedding_dim": 16}))


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    with pytest.raises(PetkitError, match="fp16 autocast needs a CUDA device"):
        resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(PetkitError, match="CUDA is not available"):
            Engine.create("cuda")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_step_updates_weights_and_embeddings_are_unit_length(precision):
    torch.manual_seed(0)
    model, _ = build_model(TINY, 32)
    engine = Engine.create("cpu", precision, channels_last=True)
    model = engine.prepare(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = fingerprint(model)
    images = engine.images(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))
    with engine.autocast():
        out = model(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4), atol=1e-4, rtol=0)
    engine.backward(out[:, 0].sum())
    engine.step(optimizer, list(model.parameters()), grad_clip=1.0)
    assert fingerprint(model) != before


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = SCHEDULES.build({"name": "warmup_cosine", "args": {"warmup_epochs": 1, "min_lr_ratio": 0.1}}, optimizer=opt, steps_per_epoch=10, epochs=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("name", [e.name for e in HEADS.entries()])
def test_every_head_builds_a_model(name):
    config = ModelConfig(TINY.backbone, Component(name))
    model, pre = build_model(config, 32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, model.embedding_dim)
    assert pre.image_size == 32 and len(pre.mean) == 3


@pytest.mark.parametrize("name", [e.name for e in BACKBONES.entries()])
def test_every_backbone_builds(name):
    args = {"model": "resnet10t"} if name == "timm" else {}
    backbone = BACKBONES.build({"name": name, "args": args})
    assert backbone.module.eval()(torch.rand(1, 3, 32, 32)).shape == (1, backbone.num_features)


def test_unknown_timm_model_and_offline_pretrained_errors(tmp_path):
    with pytest.raises(PetkitError, match="unknown timm model 'resnet181'; did you mean"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet181"}})
    with pytest.raises(PetkitError, match="backbone weights not found"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "w.pth")}})


def test_local_backbone_weights_are_loaded(tmp_path):
    source = BACKBONES.build({"name": "timm", "args": {"model": "resnet10t"}}).module
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "w.pth")}}).module
    assert fingerprint(loaded) == fingerprint(source)
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(PetkitError, match="do not fit"):
        BACKBONES.build({"name": "timm", "args": {"model": "resnet10t", "weights": str(tmp_path / "other.pth")}})


def test_checkpoint_round_trip_and_foreign_files(tmp_path):
    config = resolve(None, ["model.backbone.args.model=resnet10t", "model.head.args.embedding_dim=16"])
    model, pre = build_model(config.model, 32)
    model.eval()
    path = tmp_path / "c.pt"
    saved_fp = save_checkpoint(path, model, config, pre, epoch=3)
    loaded = load_checkpoint(path)
    assert loaded.fingerprint == saved_fp == fingerprint(loaded.model)
    assert loaded.state["epoch"] == 3 and loaded.config == config
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(PetkitError, match="not a petkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(PetkitError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    state = torch.load(path, weights_only=False)
    state["config"]["model"]["head"]["args"]["embedding_dim"] = 8  # weights no longer fit the config
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(PetkitError, match="belongs to a different model"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_inference_copy_folds_batch_norm_without_changing_the_embedding():
    torch.manual_seed(0)
    model, _ = build_model(TINY, 32)
    model.train()
    for _ in range(3):  # give the batch norms non-trivial running statistics
        model(torch.rand(8, 3, 32, 32))
    model.eval()
    engine = Engine.create("cpu", "fp32", channels_last=True)
    fused = engine.inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)
