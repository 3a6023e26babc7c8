"""The model card: the one copy of every fact about an embedding model that inference needs.

As timm's ``pretrained_cfg`` travels with a timm model, a :class:`ModelCard` travels with an
:class:`~petkit.models.model.EmbeddingModel`: the architecture (backbone and head as
``{name, args}``), the input (image size, mean, std), the embedding width and the fingerprint of
the weights. It is written once into every checkpoint and into the ONNX metadata, and a model is
rebuilt from it alone, so loading never depends on the training config's schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from petkit import __version__
from petkit.errors import PetkitError
from petkit.limits import EMBEDDING_DIM, IMAGE_SIZE, Range

INPUT = "RGB float32 NCHW in [0, 1], resized to image_size x image_size"


@dataclass(frozen=True)
class ModelCard:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    backbone: dict[str, Any] = field(default_factory=dict)  # {name, args}
    head: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # of the weights; set when the weights are saved or loaded
    petkit_version: str = __version__

    def with_fingerprint(self, value: str) -> ModelCard:
        return replace(self, fingerprint=value)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["input"] = INPUT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelCard:
        try:
            card = cls(int(data["image_size"]), _triple(data["mean"]), _triple(data["std"]), int(data["embedding_dim"]),
                       dict(data.get("backbone") or {}), dict(data.get("head") or {}), str(data.get("fingerprint", "")),
                       str(data.get("petkit_version", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PetkitError(f"{where} has an unreadable model card ({type(exc).__name__}: {exc})",
                              "re-export or re-train the model with this petkit") from exc
        card.check(where)
        return card

    def check(self, where: str) -> None:
        """The card's numbers within the ranges training accepts (a crafted card cannot ask for a 0-pixel input)."""
        IMAGE_SIZE.check(self.image_size, f"{where}: the model card's image_size")
        EMBEDDING_DIM.check(self.embedding_dim, f"{where}: the model card's embedding_dim")
        Range(0, 1).check(list(self.mean), f"{where}: the model card's mean")
        Range(0, 1, low_open=True).check(list(self.std), f"{where}: the model card's std")

    # ONNX metadata is string -> string
    def to_metadata(self) -> dict[str, str]:
        return {"petkit_card": json.dumps(self.to_dict()), "fingerprint": self.fingerprint, "image_size": str(self.image_size),
                "embedding_dim": str(self.embedding_dim), "petkit_version": self.petkit_version,
                "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std)), "input": INPUT}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: str) -> ModelCard:
        if "petkit_card" not in meta:  # petkit 0.1 wrote loose entries without a seal: re-export those
            raise PetkitError(f"{where} carries no petkit model card", "export it with 'petkit export-onnx'")
        try:
            data = json.loads(meta["petkit_card"])
        except json.JSONDecodeError as exc:
            raise PetkitError(f"{where} has a damaged petkit_card entry", "re-export it with 'petkit export-onnx'") from exc
        if not isinstance(data, dict):
            raise PetkitError(f"{where} has a damaged petkit_card entry", "re-export it with 'petkit export-onnx'")
        return cls.from_dict(data, where)


def _triple(values) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {len(values)}")
    return values  # type: ignore[return-value]


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Hash of the weights (names and float32 values): embeddings of two models compare only when it is equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
