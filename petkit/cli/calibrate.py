"""petkit calibrate EMBEDDINGS --far 0.01"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from petkit.cli.common import console, written


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        help=(
            "Set the similarity threshold for a target false-accept rate on a calibration split; "
            "writes calibration.json beside the model, where submit and search find it.\n\n"
            "open_set: FAR = share of probes of non-enrolled individuals accepted as someone (FPIR); "
            "pairs: share of different-identity pairs accepted. Calibrate on individuals kept out of training.\n\n"
            "Example: petkit calibrate val.npz --far 0.01 --gallery gallery.npz"
        ),
    )(calibrate_command)


def calibrate_command(
    embeddings: Path = typer.Argument(..., help="Embeddings of the calibration images (labelled, unseen in training)."),
    far: float = typer.Option(0.01, "--far", help="Target false-accept rate, e.g. 0.01 for 1 %."),
    mode: str = typer.Option("open_set", "--mode", help="open_set (1:N identification) or pairs (1:1 verification)."),
    split: Optional[str] = typer.Option(None, "--split", help="Calibrate on this split only."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="The enrolled gallery (open_set); default: each identity against all others."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Take the gallery from this split (of --gallery or EMBEDDINGS)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default: calibration.json beside the model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.retrieval.calibration import calibrate

    document = calibrate(embeddings, far, split, gallery, gallery_split, mode, out=out or "auto", overwrite=overwrite)
    out = document["written_to"]
    console.print(f"threshold {document['threshold']:.4f} (cosine) for FAR {far:g} ({mode}); on the calibration set FAR "
                  f"{document['achieved_far']:.4f} over {document['impostor_scores']} impostor scores, gallery of "
                  f"{document.get('gallery_identities', 'n/a')} identities")
    if "note" in document:
        console.print(f"[yellow]note:[/] {escape(document['note'])}")
    written(("calibration", out))
