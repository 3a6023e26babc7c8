"""Checkpoints: the model card + weights, and (in ``last.pt``) the state to resume training.

Two kinds, one format (``petkit.checkpoint``, version 2):

- a model checkpoint (``best.pt``, what users deploy): ``card`` and ``model`` (the weights) only;
- a run checkpoint (``last.pt``): the same plus ``config`` (the resolved run config, plain data)
  and ``training`` (epoch, history, optimiser, schedule, scaler, EMA and RNG states).

Loading needs nothing but the file: the model is rebuilt from the card's backbone and head specs,
never through today's config schema, so a checkpoint written before a ``train.*`` field was
renamed still loads. Files are read with ``torch.load(weights_only=True)``: tensors and plain
Python data only, nothing that runs code. The fingerprint is recomputed from the weights on load
and a checkpoint whose weights no longer match the one it records is refused. Version 1 files
(petkit 0.1.0: preprocessing, embedding_dim and fingerprint at the top level) still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from petkit import __version__
from petkit.errors import PetkitError
from petkit.io import atomic_path
from petkit.models.card import ModelCard, fingerprint
from petkit.models.model import EmbeddingModel, model_from_card

FORMAT = "petkit.checkpoint"
VERSION = 2  # 2: model card; best.pt holds only the card and weights


@dataclass
class LoadedCheckpoint:
    model: EmbeddingModel
    card: ModelCard
    state: dict[str, Any]  # the whole file

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint

    @property
    def config(self) -> dict[str, Any] | None:
        """The run config as plain data (run checkpoints only)."""
        return self.state.get("config")


def save_checkpoint(path: str | Path, model: EmbeddingModel, config: dict[str, Any] | None = None,
                    training: dict[str, Any] | None = None, initialisation: str | None = None) -> ModelCard:
    """Write ``model`` (card + weights); with ``config`` and ``training`` a resumable run checkpoint;
    ``initialisation``: where training started from (``pretrained timm/...``, ``random (... unavailable)``)."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    card = model.card.with_fingerprint(fingerprint(weights))
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION, "petkit_version": __version__,
                               "card": card.to_dict(), "model": weights}
    if config is not None:
        payload["config"] = config
    if training is not None:
        payload["training"] = training
    if initialisation is not None:
        payload["initialisation"] = initialisation
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a failed write (a full disk, a file-size limit) as RuntimeError
            raise PetkitError(f"cannot write checkpoint {path}: {str(exc).strip().splitlines()[0][:200]}",
                              "is the disk full? free some space or set output_dir on another disk; nothing half-written was kept") from exc
    return card


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PetkitError(f"checkpoint not found: {path}", "pass runs/<name>/best.pt or last.pt from 'petkit train'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refuses anything but tensors and plain data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PetkitError(f"cannot read checkpoint {path}: {first[:300]}",
                          "the file is damaged, not a petkit checkpoint, or holds objects petkit never loads") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PetkitError(f"{path} is not a petkit checkpoint", "pass a file written by 'petkit train'")
    if state.get("version", 0) > VERSION:
        raise PetkitError(f"{path} is checkpoint version {state['version']}; this petkit reads {VERSION}", "upgrade petkit")
    return state


def card_of(state: dict[str, Any], where: str) -> ModelCard:
    """The card of a checkpoint of any version."""
    if "card" in state:
        return ModelCard.from_dict(state["card"], where)
    try:  # version 1 (petkit 0.1.0): the model specs inside the config, the rest at the top level
        model, pre = state["config"]["model"], state["preprocessing"]
        return ModelCard.from_dict({**pre, "embedding_dim": state["embedding_dim"], "backbone": model["backbone"],
                                    "head": model["head"], "fingerprint": state["fingerprint"],
                                    "petkit_version": state.get("petkit_version", "")}, where)
    except (KeyError, TypeError) as exc:
        raise PetkitError(f"{where} lacks its model description ({exc})", "pass a checkpoint written by 'petkit train'") from exc


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    state = read_checkpoint(path)
    card = card_of(state, str(path))
    model = model_from_card(card)
    load_model_state(model, state.get("model"), str(path))
    actual = fingerprint(model.state_dict())
    if card.fingerprint and actual != card.fingerprint:
        raise PetkitError(f"{path}: the weights do not match the fingerprint recorded with them ({actual} vs {card.fingerprint})",
                          "the file was altered after petkit wrote it; use the checkpoint from the run folder")
    model.card = card.with_fingerprint(actual)
    model.eval()
    return LoadedCheckpoint(model, model.card, state)


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a readable account of what does not fit."""
    if not isinstance(weights, dict):
        raise PetkitError(f"{where} holds no weights", "pass a checkpoint written by 'petkit train'")
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
