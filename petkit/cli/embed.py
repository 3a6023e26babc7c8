"""petkit embed MODEL SOURCE -o embeddings.npz"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from petkit.cli.common import console, progress_bar, written


def register(app: typer.Typer) -> None:
    app.command(
        "embed",
        help=(
            "Embed images with a checkpoint (.pt) or model.onnx; writes embeddings.npz "
            "(L2-normalised float32 vectors, paths, identities, splits, roles, model fingerprint).\n\n"
            "Example: petkit embed runs/demo/best.pt data/manifest.csv --split test -o test.npz"
        ),
    )(embed_command)


def embed_command(
    model: Path = typer.Argument(..., help="Checkpoint from 'petkit train' or model.onnx from 'petkit export-onnx'."),
    source: Path = typer.Argument(..., help="manifest.csv, <identity>/<image> folders, the course layout (known/, unknown_dev/, ...) or a pairs CSV."),
    out: Path = typer.Option(Path("embeddings.npz"), "--out", "-o", help="Output .npz file."),
    split: Optional[str] = typer.Option(None, "--split", help="Only rows of this split (train, val, test)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    flip_tta: bool = typer.Option(False, "--flip-tta", help="Average each embedding with that of the mirrored image."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 (CUDA) or bf16 (checkpoints; an ONNX model runs in fp32)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding workers: threads up to 2, processes beyond (default: CPU cores, at most 8)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Dataset source: manifest, folder, course_verification, pairs or images (default: detected)."),
    untrained: bool = typer.Option(False, "--untrained", help="Embed with the checkpoint's architecture at its initial weights "
                                   "(seeded like 'petkit train'): the 'before training' maps of 'petkit report --before'."),
    seed: int = typer.Option(0, "--seed", help="With --untrained: the run's train.seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.engine.embedder import embed

    with progress_bar("embedding") as tracker:
        result = embed(model, source, split, batch_size, flip_tta, device, precision, workers,
                       progress=tracker, on_total=tracker.set_total, fmt=fmt, out=out, overwrite=overwrite,
                       untrained_seed=seed if untrained else None)
    console.print(f"{len(result)} images, {result.vectors.shape[1]}-d, {len(set(result.identities.tolist()))} identities; model {result.fingerprint}")
    written(("embeddings", out))
