"""The demo: the six pipeline steps on the embedded synthetic pets, in one call.

synth -> prepare (split by identity) -> train -> embed the unseen test identities with the
untrained and the trained model -> evaluate both -> submit top-3 -> export-onnx. It takes
about three minutes on two CPU cores.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Sequence

import torch

from petkit import embeddings as emb
from petkit.config import resolve
from petkit.data.batches import ImageStore
from petkit.data.manifest import read_manifest
from petkit.data.prepare import PrepareOptions, prepare
from petkit.data.synthetic import generate
from petkit.engine.callbacks import Callback
from petkit.engine.embedder import TorchEmbedder, embed, embed_store
from petkit.engine.engine import Engine
from petkit.engine.trainer import train
from petkit.errors import PetkitError
from petkit.evaluation.evaluate import evaluate, metric_value
from petkit.export.onnx import export_onnx
from petkit.io import write_json
from petkit.limits import Range, checked
from petkit.models.model import build_model
from petkit.submit.writers import submit, write_submission

MARKER = ".petkit-demo"
DEMO_SETTINGS = [
    "name=demo", "data.image_size=64", "train.epochs=25", "data.sampler.args.p=8", "model.backbone.args.pretrained=false",
    "train.early_stopping_patience=null",
]


@dataclass
class DemoResult:
    workdir: Path
    before: dict[str, float]
    after: dict[str, float]
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def prepare_workdir(workdir: Path, overwrite: bool) -> None:
    """The demo only ever clears a folder that it created itself (it holds the marker file)."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise PetkitError(f"{workdir} exists and was not made by the demo", "choose another --workdir")
        if not overwrite:
            raise PetkitError(f"{workdir} holds an earlier demo", "pass --overwrite to replace it, or another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("written by 'petkit demo'; safe to delete\n")


@checked
def run_demo(
    workdir: str | Path = "demo-output",
    identities: Annotated[int, Range(4, 100_000)] = 160,
    images_per_identity: Annotated[int, Range(2, 10_000)] = 8,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    say: Callable[[str], None] = print,
) -> DemoResult:
    started = time.perf_counter()
    workdir = Path(workdir)
    prepare_workdir(workdir, overwrite)
    photos, data = workdir / "photos", workdir / "data"
    say(f"1/6 synth: {identities} synthetic pets x {images_per_identity} photos -> {photos}")
    generate(photos, identities, images_per_identity, seed=0)
    say("2/6 prepare: check images, split by identity (test pets are never seen in training)")
    prepared = prepare(photos, data, PrepareOptions(ratios=(0.6, 0.15, 0.25), gallery_per_identity=1))
    config = resolve(None, [f"data.manifest={prepared.manifest_path}", f"output_dir={workdir / 'runs'}", *DEMO_SETTINGS, *(overrides or [])])
    say("3/6 train")
    result = train(config, callbacks=callbacks)
    say("4/6 embed the test split: untrained and trained model")
    untrained = workdir / "test_untrained.npz"
    emb.save(untrained, _embed_untrained(config, prepared.manifest_path))
    trained = workdir / "test.npz"
    embed(result.best_checkpoint, prepared.manifest_path, split="test", out=trained)
    say("5/6 evaluate + submit")
    before_doc = evaluate(untrained)
    after_doc = evaluate(trained)
    write_json(workdir / "metrics_untrained.json", before_doc)
    write_json(workdir / "metrics.json", after_doc)
    write_submission(str(workdir / "submission.csv"), submit(str(trained)))
    say("6/6 export-onnx + parity check")
    export_onnx(result.best_checkpoint, workdir / "model.onnx", prepared.manifest_path)
    names = ("recall@1", "top3_accuracy", "mAP@R", "roc_auc", "eer")
    return DemoResult(
        workdir,
        {n: metric_value(before_doc, n) for n in names},
        {n: metric_value(after_doc, n) for n in names},
        {
            "manifest": prepared.manifest_path, "run": result.run_dir, "checkpoint": result.best_checkpoint,
            "embeddings": trained, "metrics": workdir / "metrics.json", "submission": workdir / "submission.csv",
            "onnx": workdir / "model.onnx",
        },
        time.perf_counter() - started,
    )


def _embed_untrained(config, manifest_path: Path) -> emb.EmbeddingSet:
    """The same architecture with the run's seed but no training: the 'before' baseline."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.data.image_size)
    embedder = TorchEmbedder(model, Engine.create(config.train.device, config.train.precision))
    test = read_manifest(manifest_path).select("test")
    vectors = embed_store(embedder, ImageStore(test, embedder.image_size))
    return emb.from_manifest(vectors, test, embedder.fingerprint, "untrained")
