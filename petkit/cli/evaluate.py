"""petkit evaluate EMBEDDINGS -o metrics.json"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from petkit.cli.common import console, parse_list, written


def register(app: typer.Typer) -> None:
    app.command(
        "evaluate",
        help=(
            "Score embeddings; writes metrics.json and prints a table.\n\n"
            "Retrieval uses the manifest's query/gallery roles, a separate --gallery, or leave-one-out "
            "(each image against all others). Verification scores every same/different pair.\n\n"
            "Example: petkit evaluate test.npz -o metrics.json --protocol retrieval,verification"
        ),
    )(evaluate_command)


def evaluate_command(
    embeddings: Path = typer.Argument(..., help="embeddings.npz from 'petkit embed'."),
    out: Path = typer.Option(Path("metrics.json"), "--out", "-o", help="Output metrics file."),
    protocol: str = typer.Option("retrieval,verification", "--protocol", help="Comma-separated evaluators (see 'petkit plugins list')."),
    split: Optional[str] = typer.Option(None, "--split", help="Evaluate only this split."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="A separate gallery embeddings file."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Take the gallery from this split (of --gallery or of EMBEDDINGS)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.evaluation.evaluate import evaluate
    from petkit.io import refuse_overwrite, write_json

    refuse_overwrite([out], overwrite)
    document = evaluate(embeddings, parse_list(protocol), split, gallery, gallery_split)
    write_json(out, document)
    _print_tables(document)
    written(("metrics", out))


def _print_tables(document: dict) -> None:
    """One small table per protocol, its sample sizes in the caption."""
    by_protocol: dict[str, list[dict]] = {}
    for metric in document["metrics"]:
        by_protocol.setdefault(metric["protocol"], []).append(metric)
    for protocol, metrics in by_protocol.items():
        sizes = {k: v for k, v in metrics[0].items() if k not in ("name", "value", "protocol", "unit")}
        table = Table(title=protocol, caption=", ".join(f"{k}={v}" for k, v in sizes.items()))
        table.add_column("metric")
        table.add_column("value", justify="right")
        for metric in metrics:
            table.add_row(metric["name"], "n/a" if metric["value"] is None else f"{metric['value']:.4f}")
        console.print(table)
