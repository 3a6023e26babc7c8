"""petkit submit QUERIES -o submission.csv"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from petkit.cli.common import console, written


def register(app: typer.Typer) -> None:
    app.command(
        "submit",
        help=(
            "Rank gallery identities for every query image and write a submission CSV.\n\n"
            "Default form (cat-face challenge): image,pred with the 3 best identities separated by spaces.\n\n"
            "Example: petkit submit test.npz --gallery train.npz -o submission.csv --top-k 3"
        ),
    )(submit_command)


def submit_command(
    queries: Path = typer.Argument(..., help="Query embeddings (.npz)."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Gallery embeddings; default: QUERIES itself (with roles or splits)."),
    query_split: Optional[str] = typer.Option(None, "--query-split", help="Queries are this split."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Gallery is this split."),
    out: Path = typer.Option(Path("submission.csv"), "--out", "-o", help="Output CSV."),
    top_k: int = typer.Option(3, "--top-k", help="Identities per query."),
    fmt: str = typer.Option("topk", "--format", help="Submission writer (see 'petkit plugins list')."),
    id_from: str = typer.Option("name", "--id-from", help="Query id column from the image's name, stem or path."),
    image_column: str = typer.Option("image", "--image-column", help="Header of the query id column."),
    pred_column: str = typer.Option("pred", "--pred-column", help="Header of the prediction column."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.io import refuse_overwrite
    from petkit.submit.writers import submit, write_submission

    refuse_overwrite([out], overwrite)
    args = {"k": top_k, "image_column": image_column, "pred_column": pred_column}
    submission = submit(str(queries), str(gallery) if gallery else None, query_split, gallery_split, fmt, args, id_from)
    write_submission(str(out), submission)
    console.print(f"{len(submission.rows)} query images, top-{top_k} identities each")
    written(("submission", out))
