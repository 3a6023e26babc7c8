"""``petkit evaluate``: embeddings.npz -> metrics.json."""

from __future__ import annotations

import math
from pathlib import Path

from petkit import __version__
from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.io import refuse_overwrite, write_json
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
    out: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Run each protocol's evaluator and return the metrics.json document (also written to ``out``).

    ``options``: per protocol, the evaluator's arguments, e.g. ``{"few_shot": {"n_way": 10}}``.
    """
    if out is not None:
        refuse_overwrite([Path(out)], overwrite, inputs=(embeddings_path, gallery_path))
    options = options or {}
    unused = sorted(set(options) - set(protocols))
    if unused:
        raise PetkitError(f"options given for protocol(s) not run: {', '.join(unused)}", f"add them to --protocol (now: {','.join(protocols)})")
    probe, gallery = emb.select(embeddings_path, split, gallery_path, gallery_split)
    if not len(probe):
        raise PetkitError(f"no embeddings with split '{split}' in {embeddings_path}", "check --split")
    metrics: list[dict] = []
    for name in protocols:
        metrics.extend(_checked(name, EVALUATORS.build({"name": name, "args": options.get(name, {})})(probe, gallery)))
    document = {
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
    if out is not None:
        write_json(out, document)
    return document


def _checked(name: str, metrics) -> list[dict]:
    """An evaluator's answer must be a list of {name, value, protocol, ...}: one line when a plugin's is not."""
    if not isinstance(metrics, list) or not all(isinstance(m, dict) and {"name", "value", "protocol"} <= set(m) for m in metrics):
        raise PetkitError(f"evaluator '{name}' returned {type(metrics).__name__}, not a list of {{name, value, protocol, ...}} dicts",
                          "an evaluator returns one dict per metric (docs/plugins.md)")
    return metrics


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def metric_value(document: dict, name: str) -> float | None:
    for metric in document["metrics"]:
        if metric["name"] == name:
            return metric["value"]
    return None
