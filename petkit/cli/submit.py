"""petkit submit EMBEDDINGS -o submission.csv"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from petkit.cli.common import console, parse_list, written
from petkit.data.manifest import UNKNOWN_IDENTITY


def register(app: typer.Typer) -> None:
    app.command(
        "submit",
        help=(
            "Answer every test image (or pair) and write a challenge submission CSV.\n\n"
            "Formats: topk (image,pred: the 3 best identities), classification (id,label), open_set "
            "(id,label, n000000 below the calibrated threshold), pair_scores (pair_id,similarity). "
            "See docs/formats.md.\n\n"
            "Example: petkit submit all.npz --query-split test --gallery-split train --format open_set -o submission.csv"
        ),
    )(submit_command)


def submit_command(
    queries: Path = typer.Argument(..., help="Query embeddings (.npz); for pair_scores, the embedded pairs file."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Gallery embeddings; default: QUERIES itself (with roles or splits)."),
    query_split: Optional[str] = typer.Option(None, "--query-split", help="Queries are this split."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Gallery is this split."),
    out: Path = typer.Option(Path("submission.csv"), "--out", "-o", help="Output CSV."),
    fmt: str = typer.Option("topk", "--format", help="Submission writer: topk, classification, open_set, pair_scores (see 'petkit plugins list')."),
    top_k: int = typer.Option(3, "--top-k", help="Identities per query (topk)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Header, comma-separated (default per format, e.g. image,pred)."),
    delimiter: str = typer.Option(",", "--delimiter", help="CSV field separator: ',', ';' or 'tab'."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="open_set: accept the best identity at this cosine similarity or above."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="open_set: calibration.json (default: the one beside the model)."),
    unknown_label: str = typer.Option(UNKNOWN_IDENTITY, "--unknown-label", help="open_set: the answer for 'matches nobody enrolled'."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="pair_scores: the pairs CSV (pair_id,path_a,path_b)."),
    id_from: str = typer.Option("name", "--id-from", help="Query id from the image's name, stem or path."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.submit.writers import submit

    args: dict = {"delimiter": "\t" if delimiter == "tab" else delimiter}
    if columns:
        args["columns"] = parse_list(columns)
    if fmt == "topk":
        args["k"] = top_k
    if fmt == "open_set":
        args["unknown_label"] = unknown_label
    submission = submit(str(queries), str(gallery) if gallery else None, query_split, gallery_split, fmt, args, id_from,
                        threshold, str(calibration) if calibration else None, str(pairs) if pairs else None, out=out, overwrite=overwrite)
    console.print(f"{len(submission.rows)} rows ({fmt}): {submission.summary}")
    written(("submission", out))
