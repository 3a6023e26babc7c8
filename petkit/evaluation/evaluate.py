"""``petkit evaluate``: embeddings.npz -> metrics.json."""

from __future__ import annotations

import math
from pathlib import Path

from petkit import __version__
from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.registry import EVALUATORS

FORMAT = "petkit.metrics"
VERSION = 2  # 2: ci95, category, note and per-protocol options
DEFAULT_PROTOCOLS = ("retrieval", "verification")


def evaluate(
    embeddings_path: str | Path,
    protocols: tuple[str, ...] | list[str] = DEFAULT_PROTOCOLS,
    split: str | None = None,
    gallery_path: str | Path | None = None,
    gallery_split: str | None = None,
    options: dict[str, dict] | None = None,
) -> dict:
    """Run each protocol's evaluator and return the metrics.json document.

    ``options``: per protocol, the evaluator's arguments, e.g. ``{"few_shot": {"n_way": 10}}``.
    """
    options = options or {}
    unused = sorted(set(options) - set(protocols))
    if unused:
        raise PetkitError(f"options given for protocol(s) not run: {', '.join(unused)}", f"add them to --protocol (now: {','.join(protocols)})")
    data = emb.load(embeddings_path)
    if gallery_path is not None:
        probe, gallery = data.where("splits", split), emb.load(gallery_path).where("splits", gallery_split)
        emb.require_same_model(("probe", probe), ("gallery", gallery))
    else:
        probe, gallery = emb.query_gallery(data, split, split if gallery_split is None else gallery_split)
    if not len(probe):
        raise PetkitError(f"no embeddings with split '{split}' in {embeddings_path}", "check --split")
    metrics: list[dict] = []
    for name in protocols:
        metrics.extend(EVALUATORS.build({"name": name, "args": options.get(name, {})})(probe, gallery))
    return {
        "format": FORMAT,
        "version": VERSION,
        "petkit_version": __version__,
        "embeddings": str(embeddings_path),
        "split": split,
        "gallery": str(gallery_path) if gallery_path else None,
        "gallery_split": gallery_split,
        "fingerprint": probe.fingerprint,
        "options": options,
        "metrics": [{**m, "value": _clean(m["value"]), **({"ci95": [_clean(v) for v in m["ci95"]]} if "ci95" in m else {})} for m in metrics],
    }


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def metric_value(document: dict, name: str) -> float | None:
    for metric in document["metrics"]:
        if metric["name"] == name:
            return metric["value"]
    return None
