"""Default recipe on real dog faces: petkit's engine vs a plain PyTorch loop, same run.

Both pipelines train the same model (same init, same P x K batches, same loss and optimiser,
same number of epochs) on ../shared/datasets/dogfacenet-dev split by identity, then embed the
test dogs, which neither has seen, and are scored by the same metric code (leave-one-out).

- petkit: uint8 image cache, batched on-device augmentation, channels-last, bf16 autocast where
  the CPU/GPU runs it natively (the engine's `precision: auto`).
- plain: eager fp32, PIL + torchvision transforms per image in a DataLoader (2 workers), the way
  the use cases' scripts do it.

Throughput counts wall time (decoding included): training over every step of every epoch,
embedding over all images of the dataset (the metrics then use the test dogs). Usage:

    python benchmarks/bench_dogfacenet.py --epochs 3
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from petkit.config import resolve
from petkit.data import manifest as mf
from petkit.data.images import open_rgb
from petkit.data.prepare import PrepareOptions, prepare
from petkit.engine.embedder import embed
from petkit.engine.trainer import train
from petkit.evaluation.metrics import retrieval_metrics
from petkit.models.model import build_model
from petkit.registry import LOSSES, MINERS, SAMPLERS, SCHEDULES

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"


class PilImages(Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(open_rgb(self.paths[i])), self.labels[i]


def plain_train(config, rows, manifest, epochs, device, workers):
    """The baseline: what the use cases' scripts do by hand."""
    torch.manual_seed(config.train.seed)
    model, pre = build_model(config.model, config.data.image_size)
    size = config.data.image_size
    augment = T.Compose([
        T.RandomResizedCrop(size, scale=(0.56, 1.0), ratio=(0.9, 1.1)), T.RandomHorizontalFlip(),
        T.ColorJitter(0.3, 0.3, 0.3), T.RandomGrayscale(0.1), T.ToTensor(),
    ])
    identities = sorted({r[mf.IDENTITY] for r in rows})
    label_of = {name: i for i, name in enumerate(identities)}
    labels = [label_of[r[mf.IDENTITY]] for r in rows]
    dataset = PilImages([manifest.abspath(r) for r in rows], labels, augment)
    sampler = SAMPLERS.build(config.data.sampler, labels=labels, seed=config.train.seed)
    loss_fn = LOSSES.build(config.loss, num_classes=len(identities), embedding_dim=model.embedding_dim,
                           miner=MINERS.build(config.miner) if config.miner else None)
    model, loss_fn = model.to(device), loss_fn.to(device)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay)
    scheduler = SCHEDULES.build(config.optim.schedule, optimizer=optimizer, steps_per_epoch=len(sampler), epochs=epochs)
    images, started = 0, time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_sampler=list(sampler), num_workers=workers, pin_memory=device.type == "cuda")
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            scheduler.step()
            images += len(y)
    return model, images / (time.perf_counter() - started)


@torch.inference_mode()
def plain_embed(model, paths, size, device, workers):
    model.eval()
    transform = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()])
    loader = DataLoader(PilImages(paths, [0] * len(paths), transform), batch_size=64, num_workers=workers)
    out, started = [], time.perf_counter()
    for x, _ in loader:
        out.append(model(x.to(device)).float().cpu())
    return torch.cat(out).numpy(), len(paths) / (time.perf_counter() - started)


def score(vectors, identities):
    result = retrieval_metrics(vectors, identities, vectors, identities, ks=(1,), leave_one_out=True)
    return result.metrics["recall@1"], result.metrics["mAP@R"], result.queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workers", type=int, default=2, help="decoding workers of both pipelines (data.num_workers for petkit)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep outputs here (default: a temp folder)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both pipelines, e.g. data.image_size=96")
    args = parser.parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"dataset not found: {args.dataset} (this benchmark needs ../shared/datasets/dogfacenet-dev)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="petkit-bench-"))
    prepared = prepare(args.dataset, workdir / "data", PrepareOptions(ratios=(0.7, 0.1, 0.2), seed=0, overwrite=True))
    manifest = mf.read_manifest(prepared.manifest_path)
    config = resolve(None, [f"data.manifest={prepared.manifest_path}", f"output_dir={workdir / 'runs'}",
                            f"name=bench-{int(time.time())}", f"train.epochs={args.epochs}",
                            "train.early_stopping_patience=null", f"data.num_workers={args.workers}", *args.overrides])
    is_test = np.array([r.get(mf.SPLIT) == "test" for r in manifest.rows])
    test_ids = np.array([r[mf.IDENTITY] for r in manifest.rows])[is_test]
    print(f"dogfacenet-dev: {prepared.report['summary']['splits']}; {args.epochs} epochs; threads {torch.get_num_threads()}")

    result = train(config)
    trained = [row for row in result.history if row["epoch"] > 0]
    petkit_train_ips = sum(r["images_per_s"] * r["seconds"] for r in trained) / sum(r["seconds"] for r in trained)
    started = time.perf_counter()
    petkit_set = embed(result.last_checkpoint, prepared.manifest_path, workers=args.workers)
    petkit_embed_ips = len(petkit_set) / (time.perf_counter() - started)
    petkit_scores = score(petkit_set.vectors[is_test], petkit_set.identities[is_test])

    device = torch.device(result.engine.split()[0])  # the device petkit trained on
    plain_model, plain_train_ips = plain_train(config, manifest.select("train").rows, manifest, args.epochs, device, args.workers)
    plain_vectors, plain_embed_ips = plain_embed(plain_model, [manifest.abspath(r) for r in manifest.rows], config.data.image_size, device, args.workers)
    plain_scores = score(plain_vectors[is_test], test_ids)

    print()
    print(f"| pipeline ({result.engine}) | train img/s | embed img/s | test Recall@1 | test mAP@R |")
    print("|---|---:|---:|---:|---:|")
    print(f"| petkit engine | {petkit_train_ips:.1f} | {petkit_embed_ips:.1f} | {petkit_scores[0]:.4f} | {petkit_scores[1]:.4f} |")
    print(f"| plain PyTorch loop (eager fp32, PIL) | {plain_train_ips:.1f} | {plain_embed_ips:.1f} | {plain_scores[0]:.4f} | {plain_scores[1]:.4f} |")
    print(f"| ratio petkit / plain | {petkit_train_ips / plain_train_ips:.2f}x | {petkit_embed_ips / plain_embed_ips:.2f}x | "
          f"{petkit_scores[0] - plain_scores[0]:+.4f} | {petkit_scores[1] - plain_scores[1]:+.4f} |")
    print(f"\nembed: all {len(manifest)} images; test: {len(test_ids)} images of {len(set(test_ids))} unseen dogs, "
          f"{petkit_scores[2]} queries with a match (leave-one-out)")
    if math.isnan(petkit_scores[0]):
        sys.exit("no test queries could be scored")


if __name__ == "__main__":
    main()
