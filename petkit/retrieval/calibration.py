"""calibration.json: a similarity threshold set on a calibration split for a target false-accept rate.

``open_set`` (the default) calibrates identification: a probe of an individual who is not
enrolled must not be accepted as anyone; FAR is the share of such probes whose best gallery
score reaches the threshold (FPIR). ``pairs`` calibrates 1:1 verification: FAR is the share of
different-identity pairs that reach it. The file records the model fingerprint; ``submit`` and
``search`` refuse a threshold calibrated for another model.

Without a separate gallery, every calibration identity plays the unknown once against a gallery
of all the others: calibrate with a gallery about as large as the one you deploy, since FPIR
grows with the number of enrolled identities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np

from petkit import __version__
from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.evaluation import metrics as M
from petkit.io import refuse_overwrite, write_json
from petkit.limits import RATE, SIMILARITY, Range, checked

FORMAT = "petkit.calibration"
VERSION = 1
FILE_NAME = "calibration.json"
MODES = ("open_set", "pairs")


@checked
def calibrate(embeddings_path: str | Path, far: Annotated[float, RATE], split: str | None = None, gallery_path: str | Path | None = None,
              gallery_split: str | None = None, mode: str = "open_set", max_pairs: Annotated[int, Range(1, 10**10)] = 4_000_000,
              out: str | Path | None = None, overwrite: bool = False) -> dict:
    """The calibration document for ``far`` on these embeddings; with ``out`` also written there
    (``"auto"``: calibration.json beside the model), its path in ``written_to``."""
    if mode not in MODES:
        raise PetkitError(f"unknown calibration mode '{mode}'", f"use one of {', '.join(MODES)}")
    probes, gallery = _sets(embeddings_path, split, gallery_path, gallery_split)
    if mode == "pairs":
        impostors, sizes = _impostor_pairs(_with(probes, gallery), max_pairs)
    else:
        impostors, sizes = _unknown_probe_scores(probes, gallery)
    if len(impostors) == 0:
        raise PetkitError("no impostor scores to calibrate on", "calibrate on several identities; for open_set give probes the gallery lacks")
    threshold = M.calibrate_threshold(impostors, far)
    resolution = 1.0 / len(impostors)
    document = {
        "format": FORMAT, "version": VERSION, "petkit_version": __version__, "mode": mode,
        "fingerprint": probes.fingerprint, "model": probes.model, "embeddings": str(embeddings_path),
        "split": split, "gallery": str(gallery_path) if gallery_path else None, "gallery_split": gallery_split,
        "target_far": far, "threshold": threshold, "achieved_far": M.acceptance_rate(impostors, threshold),
        "impostor_scores": len(impostors), **sizes,
        **({"note": f"only {len(impostors)} impostor scores: FAR below {resolution:.2g} is not resolved"} if far < resolution else {}),
    }
    if out is not None:
        target = default_path(document["model"]) if str(out) == "auto" else Path(out)
        refuse_overwrite([target], overwrite, inputs=(embeddings_path, gallery_path))
        write_json(target, document)
        document["written_to"] = str(target)
    return document


def _sets(embeddings_path, split, gallery_path, gallery_split) -> tuple[emb.EmbeddingSet, emb.EmbeddingSet | None]:
    # roles ignored: without a separate gallery every image of the split takes its turn as the unknown probe
    probes, gallery = emb.select(embeddings_path, split, gallery_path, gallery_split, roles=False)
    probes, gallery = probes.labelled_real(), gallery.labelled_real() if gallery is not None else None
    if not len(probes):
        raise PetkitError(f"no labelled images with split '{split}' in {embeddings_path}", "calibration needs labelled images: check --split")
    return probes, gallery


def _unknown_probe_scores(probes: emb.EmbeddingSet, gallery: emb.EmbeddingSet | None) -> tuple[np.ndarray, dict]:
    if gallery is not None:
        names, scores = M.identity_scores(probes.vectors, gallery.vectors, gallery.identities)
        unknown = ~np.isin(probes.identities, names)
        return scores[unknown].max(axis=1) if unknown.any() else np.zeros(0), {
            "gallery_identities": len(names), "unknown_probes": int(unknown.sum())}
    names, scores = M.identity_scores(probes.vectors, probes.vectors, probes.identities)
    own = probes.identities[:, None] == names[None, :]
    if len(names) < 2:
        return np.zeros(0), {"gallery_identities": 0, "unknown_probes": 0}
    return np.where(own, -np.inf, scores).max(axis=1), {"gallery_identities": len(names) - 1, "unknown_probes": len(probes)}


def _impostor_pairs(data: emb.EmbeddingSet, max_pairs: int) -> tuple[np.ndarray, dict]:
    scores, same, sampled = M.verification_pairs(data.vectors, data.identities, max_pairs)
    return scores[~same], {"pairs_sampled": sampled}


def _with(a: emb.EmbeddingSet, b: emb.EmbeddingSet | None) -> emb.EmbeddingSet:
    return a if b is None else emb.concat_sets(a, b)


def default_path(model: str) -> Path:
    """calibration.json beside the model (the run folder of a checkpoint)."""
    return Path(model).parent / FILE_NAME


def load_calibration(path: str | Path) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PetkitError(f"calibration file not found: {path}", "create it with 'petkit calibrate'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PetkitError(f"{path} is not valid JSON: {exc}", "re-create it with 'petkit calibrate'") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT or "threshold" not in document:
        raise PetkitError(f"{path} is not a petkit calibration file", "create it with 'petkit calibrate'")
    expected = {"threshold": (int, float), "fingerprint": str, "target_far": (int, float), "mode": str}
    for key, types in expected.items():
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            raise PetkitError(f"{path}: '{key}' is {value!r}, not a {'string' if types is str else 'number'}",
                              "re-create the file with 'petkit calibrate'")
    SIMILARITY.check(document["threshold"], f"{path}: threshold")
    RATE.check(document["target_far"], f"{path}: target_far")
    return document


def resolve_threshold(threshold: float | None, calibration: str | Path | None, fingerprint: str, model: str) -> tuple[float | None, str]:
    """(threshold, where it came from): --threshold, else --calibration, else calibration.json beside the model."""
    if threshold is not None:
        return float(threshold), "--threshold"
    path = Path(calibration) if calibration else (default_path(model) if model else None)
    if path is None or (not calibration and not path.is_file()):
        return None, ""
    document = load_calibration(path)
    if document["fingerprint"] != fingerprint:
        raise PetkitError(
            f"{path} was calibrated for model {document['fingerprint']}, but these embeddings come from model {fingerprint}",
            "re-run 'petkit calibrate' with embeddings of this model, or pass --threshold",
        )
    return float(document["threshold"]), f"{path} (FAR {document['target_far']:g}, {document['mode']})"
