"""The one place that knows about devices and precision.

Training, embedding and export all go through an :class:`Engine`: it picks the device,
resolves ``precision: auto`` (bf16 where the hardware runs it natively, fp16 + GradScaler on
older GPUs, fp32 otherwise), applies channels-last, moves batches, and performs the
backward/clip/step sequence with gradient scaling when fp16 needs it.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from petkit.errors import PetkitError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PetkitError(f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PetkitError(f"device '{name}' requested but CUDA is not available", "use --device cpu or auto")
    return device


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision not in DTYPES:
        raise PetkitError(f"unknown precision '{precision}'", "use auto, fp32, fp16 or bf16")
    if precision == "fp16" and device.type != "cuda":
        raise PetkitError("fp16 autocast needs a CUDA device", "use --precision bf16 (or fp32) on the CPU")
    return precision


@dataclass
class Engine:
    device: torch.device
    precision: str  # resolved: fp32 | fp16 | bf16
    channels_last: bool = True
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        # loss scaling exists for fp16's narrow exponent; bf16 and fp32 do not need it
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Engine:
        resolved = resolve_device(device)
        precision = resolve_precision(precision, resolved)
        if resolved.type == "cuda":
            torch.backends.cudnn.benchmark = True
            # TF32 speeds up the fp32 ops left outside autocast; asked-for fp32 stays true fp32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
        return cls(resolved, precision, channels_last)

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        layout = ", channels-last" if self.channels_last else ""
        return f"{self.device} ({name}), {self.precision}{layout}"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def inference_copy(self, model: nn.Module) -> nn.Module:
        """An eval-mode copy for embedding, with batch norms folded into the convolutions before them.

        Folding removes a full pass over every activation map (about 1.25x on a 2-core CPU for a
        resnet18 at 112 px); a backbone that torch.fx cannot trace is used as it is.
        """
        from torch.fx.experimental.optimization import fuse

        model = copy.deepcopy(model).eval()
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            try:
                model.backbone = fuse(backbone)
            except Exception:  # dynamic control flow: no folding, same numbers
                pass
        return self.prepare(model)

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 CPU batch -> float [0, 1] on the device, in the model's memory layout."""
        batch = batch.to(self.device, non_blocking=True).float().div_(255.0)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through the loss, scaled when fp16 needs it (gradients accumulate until step)."""
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters, grad_clip: float | None) -> None:
        """Unscale, clip, step (an fp16 overflow skips the step, as GradScaler does), clear gradients."""
        if grad_clip:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def onnx_providers(self) -> list:
        """onnxruntime execution providers for this device: CUDA on the engine's GPU index, else the CPU."""
        import onnxruntime as ort

        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise PetkitError(f"device {self.device} asked for, but this onnxruntime has no CUDA provider",
                                  "install onnxruntime-gpu, or use --device cpu")
            return [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
