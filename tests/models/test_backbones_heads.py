"""Every registered backbone and head, iterated from the registries; GeM, frozen stages, scratch families."""


import pytest
import torch

from petkit.errors import PetkitError
from petkit.models.backbones import GeM
from petkit.registry import BACKBONES, HEADS


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
    head = HEADS.build({"name": "mlp", "args": {"layers": 3, "hidden_dim": 16, "embedding_dim": 8, "batch_norm": True}}, in_features=12).module
    assert sum(isinstance(m, torch.nn.Linear) for m in head) == 3 and sum(isinstance(m, torch.nn.BatchNorm1d) for m in head) == 2
    neck = HEADS.build({"name": "bnneck", "args": {"embedding_dim": 8}}, in_features=12)
    assert neck.embedding_dim == 8 and not neck.module.bn.bias.requires_grad and neck.module(torch.rand(4, 12)).shape == (4, 8)
