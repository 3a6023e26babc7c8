"""Which loss for pet re-identification? Every metric-learning recipe on the same budget.

Each recipe trains the same model (resnet18 from scratch + MLP head, same seed, same image
size, same number of epochs, same optimiser and schedule) on ../shared/datasets/dogfacenet-dev
split by identity, picks its best epoch on the val dogs, and is scored on the test dogs, which
no recipe saw (leave-one-out Recall@1 and mAP@R over the test split). Usage:

    python benchmarks/bench_losses.py --epochs 5 --image-size 96
    python benchmarks/bench_losses.py --only triplet-batch_all arcface
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from petkit.config import resolve
from petkit.data import manifest as mf
from petkit.data.prepare import PrepareOptions, prepare
from petkit.engine.embedder import embed
from petkit.engine.trainer import train
from petkit.evaluation.metrics import retrieval_metrics

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"

# name -> overrides; every recipe keeps the loss's documented defaults
RECIPES: dict[str, list[str]] = {
    "triplet-batch_all": ["loss={name: triplet, args: {margin: 0.2}}", "miner=batch_all"],
    "triplet-batch_hard": ["loss={name: triplet, args: {margin: 0.2}}", "miner=batch_hard"],
    "triplet-batch_semi_hard": ["loss={name: triplet, args: {margin: 0.2}}", "miner={name: batch_semi_hard, args: {margin: 0.2}}"],
    "contrastive-all_pairs": ["loss=contrastive"],
    "arcface": ["loss=arcface", "optim.group_lr={loss: 0.01}"],
    "cosface": ["loss=cosface", "optim.group_lr={loss: 0.01}"],
    "multi_similarity": ["loss=multi_similarity"],
    "supcon": ["loss=supcon"],
    "cross_entropy": ["loss=cross_entropy", "optim.group_lr={loss: 0.01}"],
}


def score(path: Path, manifest_path: Path, is_test: np.ndarray) -> tuple[float, float]:
    vectors = embed(path, manifest_path)
    ids = vectors.identities[is_test]
    result = retrieval_metrics(vectors.vectors[is_test], ids, vectors.vectors[is_test], ids, ks=(1,), leave_one_out=True)
    return result.metrics["recall@1"], result.metrics["mAP@R"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help=f"recipes to run (default all): {', '.join(RECIPES)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every recipe, e.g. model.backbone.args.pretrained=true")
    args = parser.parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"dataset not found: {args.dataset} (this benchmark needs ../shared/datasets/dogfacenet-dev)")
    unknown = sorted(set(args.only or []) - set(RECIPES))
    if unknown:
        sys.exit(f"unknown recipes {unknown}; choose from {', '.join(RECIPES)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="petkit-losses-"))
    prepared = prepare(args.dataset, workdir / "data", PrepareOptions(ratios=(0.7, 0.1, 0.2), seed=0, overwrite=True))
    manifest = mf.read_manifest(prepared.manifest_path)
    is_test = np.array([r.get(mf.SPLIT) == "test" for r in manifest.rows])
    print(f"dogfacenet-dev: {prepared.report['summary']['splits']}; {args.epochs} epochs at {args.image_size} px", flush=True)
    rows = []
    for name in args.only or RECIPES:
        config = resolve(None, [f"data.manifest={prepared.manifest_path}", f"output_dir={workdir / 'runs'}", f"name={name}-{int(time.time())}",
                                f"train.epochs={args.epochs}", f"data.image_size={args.image_size}", "train.early_stopping_patience=null",
                                *args.overrides, *RECIPES[name]])
        started = time.perf_counter()
        result = train(config)
        minutes = (time.perf_counter() - started) / 60
        recall, map_r = score(result.best_checkpoint, prepared.manifest_path, is_test)
        untrained = result.history[0]["val_recall@1"]
        rows.append({"recipe": name, "val_recall@1_untrained": untrained, "val_recall@1_best": result.best_metric,
                     "test_recall@1": recall, "test_mAP@R": map_r, "minutes": minutes})
        print(f"{name}: test Recall@1 {recall:.4f}  mAP@R {map_r:.4f}  ({minutes:.1f} min)", flush=True)
    print()
    print(f"| recipe ({args.epochs} epochs, {args.image_size} px, resnet18 from scratch) | val Recall@1 (best) | test Recall@1 | test mAP@R | minutes |")
    print("|---|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: -r["test_recall@1"]):
        print(f"| {row['recipe']} | {row['val_recall@1_best']:.4f} | {row['test_recall@1']:.4f} | {row['test_mAP@R']:.4f} | {row['minutes']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
