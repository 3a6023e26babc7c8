"""Checkpoints: weights + resolved config + preprocessing + version + embedding fingerprint.

Loading needs nothing but the file: the model is rebuilt from the config stored inside.
The fingerprint (a hash of the weights) travels into embeddings.npz and model.onnx so that
vectors from different models are never compared by mistake.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from petkit import __version__
from petkit.config import Config, from_dict, to_dict
from petkit.errors import PetkitError
from petkit.io import atomic_path
from petkit.models.model import EmbeddingModel, Preprocessing, build_model

FORMAT = "petkit.checkpoint"
VERSION = 1


def fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class LoadedCheckpoint:
    model: EmbeddingModel
    preprocessing: Preprocessing
    config: Config
    fingerprint: str
    state: dict[str, Any]  # the whole file: epoch, optimizer, history, ...


def save_checkpoint(path: str | Path, model: EmbeddingModel, config: Config, preprocessing: Preprocessing, **training_state: Any) -> str:
    model_fingerprint = fingerprint(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "petkit_version": __version__,
        "config": to_dict(config),
        "preprocessing": preprocessing.to_dict(),
        "fingerprint": model_fingerprint,
        "embedding_dim": model.embedding_dim,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **training_state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return model_fingerprint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PetkitError(f"checkpoint not found: {path}", "pass runs/<name>/best.pt or last.pt from 'petkit train'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PetkitError(f"cannot read checkpoint {path}: {exc}", "the file is damaged or not a petkit checkpoint") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PetkitError(f"{path} is not a petkit checkpoint", "pass a file written by 'petkit train'")
    if state.get("version", 0) > VERSION:
        raise PetkitError(f"{path} is checkpoint version {state['version']}; this petkit reads {VERSION}", "upgrade petkit")
    return state


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    state = read_checkpoint(path)
    config = from_dict(state["config"])
    pre = state["preprocessing"]
    model, preprocessing = build_model(config.model, pre["image_size"], pre["mean"], pre["std"])
    load_model_state(model, state["model"], str(path))
    model.eval()
    return LoadedCheckpoint(model, preprocessing, config, state["fingerprint"], state)


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a readable account of what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or mismatched:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", mismatched))
            if keys
        )
        raise PetkitError(
            f"checkpoint {where} belongs to a different model ({detail})",
            "use the checkpoint with the config it was trained with, or start a new run",
        )
    model.load_state_dict(weights)
