"""The engine: device and precision resolution, the AMP step, batch-norm folding for inference."""

import pytest
import torch

from petkit.config import Component, ModelConfig
from petkit.engine.engine import Engine, resolve_precision
from petkit.errors import PetkitError
from petkit.models.card import fingerprint
from petkit.models.model import build_model
from petkit.registry import SCHEDULES

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
    model = build_model(TINY, 32)
    engine = Engine.create("cpu", precision, channels_last=True)
    model = engine.prepare(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = fingerprint(model.state_dict())
    images = engine.images(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))
    with engine.autocast():
        out = model(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4), atol=1e-4, rtol=0)
    engine.backward(out[:, 0].sum())
    engine.step(optimizer, list(model.parameters()), grad_clip=1.0)
    assert fingerprint(model.state_dict()) != before


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


def test_inference_copy_folds_batch_norm_without_changing_the_embedding():
    torch.manual_seed(0)
    model = build_model(TINY, 32)
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
