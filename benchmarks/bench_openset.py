"""Open-set identification on real dog faces: does a threshold calibrated for FAR x hold on dogs never seen?

Trains the default recipe on ../shared/datasets/dogfacenet-dev split by identity (70/10/20, seed
0), or takes --checkpoint, and embeds every image. The 198 val + test dogs, unseen in training,
are then split at random into three groups of dogs, many times over:

- enrolled: every image but one goes into the gallery, the held-out image is a known probe;
- calibration strangers: ``petkit.retrieval.calibration`` sets the threshold on their images
  (open-set FAR = FPIR: the share of strangers accepted as some enrolled dog);
- evaluation strangers: the achieved FPIR is measured on their images.

Also prints re-ranking's effect on leave-one-out retrieval over the test dogs. Usage:

    python benchmarks/bench_openset.py --epochs 20
    python benchmarks/bench_openset.py --checkpoint runs/x/best.pt --embeddings all.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from petkit import embeddings as emb
from petkit.config import resolve
from petkit.data.prepare import PrepareOptions, prepare
from petkit.engine.embedder import embed
from petkit.engine.trainer import train
from petkit.evaluation import metrics as M
from petkit.evaluation.rerank import rerank

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"
TARGETS = (0.001, 0.01, 0.05)


def partition(data: emb.EmbeddingSet, rng: np.random.Generator):
    """(gallery, known probes, calibration strangers, evaluation strangers) by a random split of the dogs."""
    names = np.array(sorted(set(data.identities.tolist())))
    rng.shuffle(names)
    enrolled, calibration, evaluation = np.array_split(names, 3)
    in_gallery = np.zeros(len(data), dtype=bool)
    for name in enrolled:
        members = np.nonzero(data.identities == name)[0]
        in_gallery[rng.permutation(members)[1:]] = True  # one image held out as a known probe
    known_probe = np.isin(data.identities, enrolled) & ~in_gallery
    return (data.subset(in_gallery), data.subset(known_probe), data.subset(np.isin(data.identities, calibration)),
            data.subset(np.isin(data.identities, evaluation)))


def open_set_rounds(unseen: emb.EmbeddingSet, rounds: int) -> dict[float, list[tuple[float, float, float]]]:
    """target FAR -> per round (calibration FPIR, evaluation FPIR, DIR of the known probes)."""
    rng = np.random.default_rng(0)
    out: dict[float, list] = {far: [] for far in TARGETS}
    for _ in range(rounds):
        gallery, known, calibration, evaluation = partition(unseen, rng)
        best = {}
        for name, probes in (("known", known), ("calibration", calibration), ("evaluation", evaluation)):
            names, scores = M.identity_scores(probes.vectors, gallery.vectors, gallery.identities)
            best[name] = (scores.max(axis=1), names[scores.argmax(axis=1)] == probes.identities)
        for far in TARGETS:
            threshold = M.calibrate_threshold(best["calibration"][0], far)
            top, correct = best["known"]
            out[far].append((M.acceptance_rate(best["calibration"][0], threshold), M.acceptance_rate(best["evaluation"][0], threshold),
                             float(np.mean(correct & (top >= threshold)))))
    return out


def rerank_table(test: emb.EmbeddingSet) -> list[tuple[str, float, float, float]]:
    rows = []
    for method, args in (("none", {}), ("query_expansion", {"n": 1, "alpha": 3.0}), ("query_expansion", {"n": 2, "alpha": 3.0}),
                         ("k_reciprocal", {"k1": 20, "k2": 6, "lambda_": 0.3}), ("k_reciprocal", {"k1": 6, "k2": 3, "lambda_": 0.3})):
        started = time.perf_counter()
        similarity = rerank(method, test.vectors, test.vectors, True, **args)
        result = M.retrieval_metrics(test.vectors, test.identities, test.vectors, test.identities, (1, 5), leave_one_out=True,
                                     similarity=similarity)
        label = method + (f" {args}" if args else "")
        rows.append((label, result.metrics["recall@1"], result.metrics["mAP@R"], time.perf_counter() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50, help="random partitions of the unseen dogs")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="skip training: embed with this model")
    parser.add_argument("--embeddings", type=Path, default=None, help="skip embedding: read (or write) all images' embeddings here")
    parser.add_argument("overrides", nargs="*", help="training config overrides, e.g. train.device=cuda")
    args = parser.parse_args()
    if not args.dataset.is_dir() and not (args.embeddings and args.embeddings.is_file()):
        sys.exit(f"dataset not found: {args.dataset} (this benchmark needs ../shared/datasets/dogfacenet-dev)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="petkit-openset-"))
    if args.embeddings and args.embeddings.is_file():
        data = emb.load(args.embeddings)
    else:
        prepared = prepare(args.dataset, workdir / "data", PrepareOptions(ratios=(0.7, 0.1, 0.2), seed=0, overwrite=True))
        checkpoint = args.checkpoint
        if checkpoint is None:
            config = resolve(None, [f"data.manifest={prepared.manifest_path}", f"output_dir={workdir / 'runs'}", "name=openset",
                                    f"train.epochs={args.epochs}", *args.overrides])
            checkpoint = train(config).best_checkpoint
        data = embed(checkpoint, prepared.manifest_path, workers=4)
        emb.save(args.embeddings or workdir / "all.npz", data)
    unseen = data.subset(np.isin(data.columns["splits"], ["val", "test"]))
    print(f"unseen dogs: {len(set(unseen.identities.tolist()))} ({len(unseen)} images); model {data.fingerprint}; {args.rounds} partitions")
    print("\n| target FAR | calibration FPIR | achieved FPIR on other unseen dogs: mean (sd) | min - max | rounds in [0.5x, 2x] | DIR |")
    print("|---:|---:|---:|---:|---:|---:|")
    for far, rounds in open_set_rounds(unseen, args.rounds).items():
        cal, achieved, dir_ = (np.array(column) for column in zip(*rounds))
        within = np.mean((achieved >= far / 2) & (achieved <= 2 * far))
        print(f"| {far:.1%} | {cal.mean():.4f} | {achieved.mean():.4f} ({achieved.std():.4f}) | {achieved.min():.4f} - {achieved.max():.4f} "
              f"| {within:.0%} | {dir_.mean():.3f} |")
    test = data.where("splits", "test")
    print(f"\nre-ranking, leave-one-out over the {len(set(test.identities.tolist()))} test dogs ({len(test)} images)")
    print("\n| re-ranking | Recall@1 | mAP@R | seconds |\n|---|---:|---:|---:|")
    for label, r1, map_r, seconds in rerank_table(test):
        print(f"| {label} | {r1:.4f} | {map_r:.4f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
