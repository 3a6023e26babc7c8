"""petkit export-onnx CHECKPOINT -o model.onnx"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from petkit.cli.common import console, written


def register(app: typer.Typer) -> None:
    app.command(
        "export-onnx",
        help=(
            "Export a checkpoint to ONNX (dynamic batch axis) and check parity with PyTorch on real images; "
            "fails, writing nothing, when the outputs differ by more than --atol.\n\n"
            "Example: petkit export-onnx runs/demo/best.pt -o model.onnx --images data/manifest.csv"
        ),
    )(export_command)


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from 'petkit train'."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="Output ONNX file (a .parity.json report is written beside it)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Manifest or folder for the parity check (default: the training manifest)."),
    samples: int = typer.Option(16, "--samples", help="Images in the parity check."),
    atol: float = typer.Option(1e-3, "--atol", help="Largest allowed absolute difference between embeddings."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset version."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.export.onnx import export_onnx

    with console.status("exporting and checking parity"):
        report = export_onnx(checkpoint, out, images, samples, atol, opset, overwrite=overwrite)
    console.print(
        f"parity on {report.inputs} ({report.provider}): max |diff| {report.max_abs_diff:.2e} "
        f"(tolerance {report.atol:g}), min cosine {report.min_cosine:.6f}"
    )
    written(("model", out), ("parity report", out.with_name(out.name + ".parity.json")))
