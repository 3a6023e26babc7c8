"""How long `petkit report` takes on real dog faces, beside `petkit evaluate` on the same embeddings.

Trains the default recipe for a few epochs on ../shared/datasets/dogfacenet-dev (3,953 photos of
660 dogs, split by identity), embeds every photo with the untrained and the trained model, then
times, in the same run: evaluate (retrieval + verification, the metrics the report's table holds),
the report without Grad-CAM, and the report with Grad-CAM (whose extra time is divided by the grid
queries it explains). Prints a table and the time of each report section. Usage:

    python benchmarks/bench_report.py --epochs 3 [--out report-dogs/]
    python benchmarks/bench_report.py --embeddings all.npz --run runs/dogs --model runs/dogs/best.pt
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogfacenet-dev"


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)


def pipeline(work: Path, epochs: int) -> tuple[Path, Path, Path, Path]:
    """(embeddings of all photos, run folder, best.pt, embeddings of the untrained model)."""
    from petkit.config import resolve
    from petkit.data.prepare import prepare
    from petkit.engine.embedder import embed
    from petkit.engine.trainer import train
    from petkit.models.checkpoint import save_checkpoint
    from petkit.models.model import build_model

    manifest = prepare(DATASET, work / "data").manifest_path
    config = resolve(None, [f"data.manifest={manifest}", f"output_dir={work / 'runs'}", "name=dogs", f"train.epochs={epochs}"])
    result = train(config)
    untrained = work / "untrained.pt"
    save_checkpoint(untrained, build_model(config.model, config.data.image_size, config.data.mean, config.data.std))
    embed(result.best_checkpoint, manifest, out=work / "all.npz")
    embed(untrained, manifest, out=work / "untrained.npz")
    return work / "all.npz", result.run_dir, result.best_checkpoint, work / "untrained.npz"


def _gradcam_seconds(embeddings: Path, model: Path, pairs: int = 12) -> float:
    """Seconds per query for the two Grad-CAM maps (query, top match), timed alone on ``pairs`` photo pairs."""
    from petkit import embeddings as emb
    from petkit.data.images import load_tensor
    from petkit.models.checkpoint import load_checkpoint
    from petkit.report.gradcam import similarity_cams

    net = load_checkpoint(model).model
    paths = emb.load(embeddings).absolute_paths()[: 2 * pairs]
    images = [load_tensor(p, net.card.image_size) for p in paths]
    similarity_cams(net, images[0], images[1])  # warm-up
    started = time.perf_counter()
    for a, b in zip(images[0::2], images[1::2]):
        similarity_cams(net, a, b)
    return (time.perf_counter() - started) / pairs


def timed(label: str, fn):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.1f} s", flush=True)
    return value, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--before", type=Path)
    parser.add_argument("--out", type=Path, help="keep the report here (default: a temporary folder)")
    args = parser.parse_args()
    if args.embeddings is None and not DATASET.is_dir():
        print(f"skipped: {DATASET} not found", file=sys.stderr)
        return 0
    from petkit.evaluation.evaluate import evaluate
    from petkit.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.embeddings is None:
            args.embeddings, args.run, args.model, args.before = pipeline(work, args.epochs)
        out = args.out or work / "report"
        (_, evaluate_s) = timed("evaluate (retrieval, verification)", lambda: evaluate(args.embeddings, ["retrieval", "verification"]))
        sections: list[tuple[str, float]] = []

        def progress(text: str) -> None:
            sections.append((text, time.perf_counter()))

        plain, plain_s = timed("report without Grad-CAM", lambda: build_report(
            args.embeddings, run=args.run, model=args.model, before=args.before, out=work / "plain", gradcam=False, progress=progress))
        ends = [t for _, t in sections[1:]] + [sections[0][1] + plain_s if sections else 0]
        breakdown = [(name, end - start) for (name, start), end in zip(sections, ends)]
        if out.exists():
            shutil.rmtree(out)
        full, full_s = timed("report with Grad-CAM", lambda: build_report(
            args.embeddings, run=args.run, model=args.model, before=args.before, out=out))
        cam_s = _gradcam_seconds(args.embeddings, args.model)
        shot = None
        chromium = shutil.which("chromium")
        if chromium:
            shot = out / "screenshot.png"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--window-size=1280,2600", f"--screenshot={shot}", full.index.resolve().as_uri()],
                           capture_output=True, timeout=120, check=False)
    print()
    print(f"{os.cpu_count()} cores ({cpu_flags()}), {len(plain.figures)} figures without Grad-CAM, {len(full.figures)} with it")
    print("| step | seconds |")
    print("|---|---:|")
    print(f"| evaluate (baseline: metrics only) | {evaluate_s:.1f} |")
    print(f"| report without Grad-CAM | {plain_s:.1f} |")
    print(f"| report with Grad-CAM | {full_s:.1f} |")
    print(f"| Grad-CAM per grid query (query + top match maps, measured alone) | {cam_s:.3f} |")
    print()
    print("| report section (without Grad-CAM) | seconds |")
    print("|---|---:|")
    for name, seconds in breakdown:
        print(f"| {name} | {seconds:.1f} |")
    if args.out:
        print(f"\nreport: {full.index}" + (f"; screenshot: {shot}" if shot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
