"""petkit report [EMBEDDINGS.npz] [--run runs/NAME] [--model best.pt] -o report/"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from petkit.cli.common import console, err_console, written


def register(app: typer.Typer) -> None:
    app.command(
        "report",
        help=(
            "Write a self-contained HTML report (report/index.html) with one PNG per figure and its data as JSON: "
            "metrics with 95 % intervals, training curves, ROC/DET, similarity histograms, real-vs-fake distances, "
            "PCA/t-SNE/UMAP maps, retrieval grids of the worst and of random queries, Grad-CAM, open-set and few-shot "
            "curves, a per-identity table. Each figure is drawn where its inputs exist; the page says why others are absent.\n\n"
            "Example: petkit report test.npz --run runs/dogs --model runs/dogs/best.pt -o report/"
        ),
    )(report_command)


def report_command(
    embeddings: Optional[Path] = typer.Argument(None, help="embeddings.npz from 'petkit embed' (omit for training curves only)."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Output folder (index.html, figures/, thumbs/)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Run folder of 'petkit train' (history.csv, steps.csv): training curves."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint (.pt) for Grad-CAM attention maps."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="A separate gallery embeddings file."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration.json (default: the one beside the model)."),
    before: Optional[Path] = typer.Option(None, "--before", help="Embeddings of the untrained model: 'before' maps."),
    split: Optional[str] = typer.Option(None, "--split", help="Report on this split only."),
    threshold: List[float] = typer.Option([], "--threshold", help="A fixed cosine threshold to draw (repeatable)."),
    distance_threshold: List[float] = typer.Option([], "--distance-threshold", help="A fixed Euclidean distance threshold, e.g. 0.5 (repeatable)."),
    max_points: int = typer.Option(2000, "--max-points", help="Images on the PCA map (a seeded sample above)."),
    tsne_points: int = typer.Option(1000, "--tsne-points", help="Images on the t-SNE and UMAP maps."),
    queries: int = typer.Option(6, "--queries", help="Rows per retrieval grid."),
    top_k: int = typer.Option(5, "--top-k", help="Matches shown per query."),
    gradcam: bool = typer.Option(True, "--gradcam/--no-gradcam", help="Grad-CAM maps for the grids' queries (needs --model .pt)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report in the folder."),
) -> None:
    from petkit.report import build_report

    with console.status("report") as status:
        result = build_report(embeddings, run, model, gallery, calibration, before, out, split, threshold, distance_threshold, max_points,
                              tsne_points, queries, top_k, gradcam, overwrite=overwrite, progress=lambda text: status.update(f"report: {text}"))
    summarise(result)


def summarise(result) -> None:
    console.print(f"{len(result.figures)} figures in {result.seconds:.1f} s")
    for what, why in result.absent:
        err_console.print(f"[dim]absent:[/] {escape(what)}: {escape(why)}")
    written(("report", result.index), ("figures", result.out / "figures"))
