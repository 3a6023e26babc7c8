"""Train-time augmentation, chosen in the config as ``data.augment: {name, args}``.

``batched`` (the default) warps the whole batch on the training device at once: one random
affine per image (zoom, shift, rotation, horizontal flip) through a single ``grid_sample``
call, then colour jitter as tensor arithmetic. On a 2-core machine this is what keeps the
model busy. ``v2`` runs any list of torchvision ``transforms.v2`` per image; the named presets
are such lists tuned for the use cases. Normalisation is not an augmentation here: mean/std
live inside the model (``data.mean``/``data.std``) so checkpoints and ONNX files carry them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import torch
import torch.nn.functional as F

from petkit.errors import PetkitError
from petkit.limits import FRACTION, Range
from petkit.registry import AUGMENTATIONS

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class BatchedAugment:
    """float [B, 3, H, W] in [0, 1] -> augmented float of the same shape, on the same device."""

    hflip: bool = True
    scale: list[float] = field(default_factory=lambda: [0.75, 1.0])  # zoom range of the crop
    shift: float = 0.08  # max translation, fraction of the image side
    rotate: float = 10.0  # max rotation, degrees
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    grayscale_p: float = 0.1

    def __post_init__(self) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise PetkitError(f"augment scale must be [low, high] with 0 < low <= high, got {self.scale}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = images.shape[0]
        device = images.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(batch, generator=generator, device="cpu").to(device) * (high - low) + low

        zoom = uniform(self.scale[0], self.scale[1])
        angle = uniform(-self.rotate, self.rotate) * (math.pi / 180)
        flip = torch.ones(batch, device=device)
        if self.hflip:
            flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        tx, ty = uniform(-self.shift, self.shift) * 2, uniform(-self.shift, self.shift) * 2
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        theta = torch.stack([
            torch.stack([cos * flip, -sin, tx], dim=1),
            torch.stack([sin * flip, cos, ty], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return self._jitter(out, uniform)

    def _jitter(self, images: torch.Tensor, uniform) -> torch.Tensor:
        shape = (-1, 1, 1, 1)
        if self.brightness:
            images = images * uniform(1 - self.brightness, 1 + self.brightness).view(shape)
        gray = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
        if self.contrast:
            mean = gray.mean(dim=(2, 3), keepdim=True)
            factor = uniform(1 - self.contrast, 1 + self.contrast).view(shape)
            images, gray = (images - mean) * factor + mean, (gray - mean) * factor + mean
        if self.saturation:
            images = gray + (images - gray) * uniform(1 - self.saturation, 1 + self.saturation).view(shape)
        if self.grayscale_p:
            to_gray = (uniform(0, 1) < self.grayscale_p).view(shape)
            images = torch.where(to_gray, gray.expand_as(images), images)
        return images.clamp_(0.0, 1.0)


class PerImageTransforms:
    """A torchvision v2 pipeline applied to each image of the batch (v2 draws one set of random
    parameters per call, so a batched call would give every image the same crop)."""

    def __init__(self, transforms: list[dict[str, Any]], image_size: int):
        from torchvision.transforms import v2

        self.specs = transforms
        self.pipeline = v2.Compose([_v2_transform(v2, spec, image_size, i) for i, spec in enumerate(transforms)])

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([self.pipeline(image) for image in images]).clamp_(0.0, 1.0)


_SIZED = {"RandomResizedCrop", "Resize", "CenterCrop", "RandomCrop"}


def _v2_transform(v2, spec: Any, image_size: int, index: int):
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "args"}:
        raise PetkitError(f"augment transforms[{index}] must be {{name, args}}, got {spec!r}",
                          "e.g. {name: RandomResizedCrop, args: {scale: [0.7, 1.0]}}")
    name, args = spec["name"], dict(spec.get("args") or {})
    cls = getattr(v2, name, None)
    if not isinstance(cls, type) or name == "Normalize":
        why = "normalisation lives in the model: set data.mean / data.std" if name == "Normalize" else "not a torchvision.transforms.v2 class"
        raise PetkitError(f"augment transforms[{index}]: '{name}' is {why}",
                          "use names such as RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomAffine, GaussianBlur, RandomErasing")
    if name in _SIZED and "size" not in args:
        args["size"] = [image_size, image_size]  # keep the batch square at data.image_size
    for key, value in args.items():
        if key == "transforms" and isinstance(value, list):  # RandomApply / RandomChoice / RandomOrder
            args[key] = [_v2_transform(v2, inner, image_size, index) for inner in value]
        elif isinstance(value, list):
            args[key] = tuple(value)
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise PetkitError(f"augment transforms[{index}] {name}{args}: {exc}", "check the arguments against torchvision's v2 documentation") from exc


PRESETS: dict[str, list[dict[str, Any]]] = {
    # pet faces: framing varies, left/right is not identity, lighting and white balance vary
    "pet_faces": [
        {"name": "RandomResizedCrop", "args": {"scale": [0.7, 1.0], "ratio": [0.9, 1.1], "antialias": True}},
        {"name": "RandomHorizontalFlip"},
        {"name": "RandomApply", "args": {"transforms": [{"name": "RandomRotation", "args": {"degrees": 15}}], "p": 0.5}},
        {"name": "ColorJitter", "args": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.03}},
        {"name": "RandomGrayscale", "args": {"p": 0.1}},
        {"name": "RandomErasing", "args": {"p": 0.25, "scale": [0.02, 0.12]}},
    ],
    # faces under distortion: the test images are blurred, noisy, recoloured and warped
    "faces_distortion": [
        {"name": "RandomAffine", "args": {"degrees": 15, "translate": [0.06, 0.06], "scale": [0.85, 1.05]}},
        {"name": "RandomHorizontalFlip"},
        {"name": "ColorJitter", "args": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.05}},
        {"name": "RandomApply", "args": {"transforms": [{"name": "GaussianBlur", "args": {"kernel_size": 5, "sigma": [0.1, 2.0]}}], "p": 0.4}},
        {"name": "RandomGrayscale", "args": {"p": 0.1}},
        {"name": "RandomErasing", "args": {"p": 0.3, "scale": [0.02, 0.15]}},
    ],
    # closed-set classification: stronger crops, cutout
    "classification": [
        {"name": "RandomResizedCrop", "args": {"scale": [0.5, 1.0], "antialias": True}},
        {"name": "RandomHorizontalFlip"},
        {"name": "ColorJitter", "args": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}},
        {"name": "RandomErasing", "args": {"p": 0.5, "scale": [0.02, 0.2]}},
    ],
}


@AUGMENTATIONS.register("batched")
def batched(hflip: bool = True, scale: Annotated[list[float], Range(0.05, 4)] = (0.75, 1.0), shift: Annotated[float, FRACTION] = 0.08,
            rotate: Annotated[float, Range(0, 180)] = 10.0, brightness: Annotated[float, FRACTION] = 0.3,
            contrast: Annotated[float, FRACTION] = 0.3, saturation: Annotated[float, FRACTION] = 0.3,
            grayscale_p: Annotated[float, FRACTION] = 0.1) -> BatchedAugment:
    """Fast on-device batch warp (zoom, shift, rotate, flip) + colour jitter + random grayscale."""
    return BatchedAugment(hflip, list(scale), shift, rotate, brightness, contrast, saturation, grayscale_p)


@AUGMENTATIONS.register("v2")
def torchvision_v2(image_size: int, transforms: list) -> PerImageTransforms:
    """Any list of torchvision transforms.v2 ({name, args}) applied per image."""
    if not isinstance(transforms, list) or not transforms:
        raise PetkitError("augment 'v2' needs args.transforms: a non-empty list of {name, args}")
    return PerImageTransforms(transforms, image_size)


@AUGMENTATIONS.register("none")
def no_augmentation() -> Augmentation:
    """No augmentation: the resized image as it is."""
    return lambda images, generator=None: images


def _preset(name: str, summary: str) -> None:
    def factory(image_size: int) -> PerImageTransforms:
        return PerImageTransforms(PRESETS[name], image_size)

    factory.__doc__ = summary
    AUGMENTATIONS.add(name, factory)


_preset("pet_faces", "Preset (v2): resized crop 0.7-1, flip, rotate, colour/hue jitter, grayscale, erasing.")
_preset("faces_distortion", "Preset (v2): affine, flip, strong colour jitter, blur, grayscale, erasing.")
_preset("classification", "Preset (v2): resized crop 0.5-1, flip, colour jitter, erasing (cutout).")
