"""petkit evaluate EMBEDDINGS -o metrics.json"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from petkit.cli.common import console, parse_list, parse_options, written


def register(app: typer.Typer) -> None:
    app.command(
        "evaluate",
        help=(
            "Score embeddings; writes metrics.json and prints a table.\n\n"
            "Protocols: retrieval, verification, open_set, classification, few_shot, real_fake, clustering "
            "(docs/evaluation.md). Queries and gallery come from the manifest's query/gallery roles, a "
            "separate --gallery, --gallery-split, or leave-one-out (each image against all others).\n\n"
            "Example: petkit evaluate test.npz -o metrics.json --protocol retrieval,open_set --option open_set.fpirs=[0.01]"
        ),
    )(evaluate_command)


def evaluate_command(
    embeddings: Path = typer.Argument(..., help="embeddings.npz from 'petkit embed'."),
    out: Path = typer.Option(Path("metrics.json"), "--out", "-o", help="Output metrics file."),
    protocol: str = typer.Option("retrieval,verification", "--protocol", help="Comma-separated evaluators (see 'petkit plugins list')."),
    split: Optional[str] = typer.Option(None, "--split", help="Evaluate only this split."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="A separate gallery embeddings file."),
    gallery_split: Optional[str] = typer.Option(None, "--gallery-split", help="Take the gallery from this split (of --gallery or of EMBEDDINGS)."),
    option: list[str] = typer.Option([], "--option", help="PROTOCOL.KEY=VALUE for an evaluator, e.g. few_shot.n_way=10 (repeatable)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Score verification on the pairs of this CSV (pair_id,path_a,path_b,same)."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Re-rank retrieval: k_reciprocal or query_expansion."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the HTML report (as 'petkit report') to this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.evaluation.evaluate import evaluate

    options = parse_options(option)
    if pairs:
        options.setdefault("verification", {})["pairs"] = str(pairs)
    if rerank:
        options.setdefault("retrieval", {})["rerank"] = rerank
    document = evaluate(embeddings, parse_list(protocol), split, gallery, gallery_split, options, out=out, overwrite=overwrite)
    _print_tables(document)
    written(("metrics", out))
    if report is not None:
        from petkit.cli.report import summarise
        from petkit.report import build_report

        summarise(build_report(embeddings, gallery=gallery, out=report, split=split, overwrite=overwrite))


def _print_tables(document: dict) -> None:
    """One small table per protocol, its sample sizes in the caption."""
    by_protocol: dict[str, list[dict]] = {}
    for metric in document["metrics"]:
        by_protocol.setdefault(metric["protocol"], []).append(metric)
    for protocol, metrics in by_protocol.items():
        overall = [m for m in metrics if "category" not in m]
        sizes = {k: v for k, v in overall[0].items() if isinstance(v, int) and k not in ("value",)}
        table = Table(title=protocol, caption=", ".join(f"{k}={v}" for k, v in sizes.items()))
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("95% interval", justify="right")
        table.add_column("note")
        for metric in overall:
            interval = metric.get("ci95")
            table.add_row(metric["name"], _number(metric["value"]),
                          f"{_number(interval[0])} - {_number(interval[1])}" if interval else "", metric.get("note", ""))
        console.print(table)
        _print_categories(protocol, [m for m in metrics if "category" in m])


def _print_categories(protocol: str, metrics: list[dict], shown: int = 20) -> None:
    if not metrics:
        return
    names = list(dict.fromkeys(m["name"] for m in metrics))
    rows: dict[str, dict] = {}
    for m in metrics:
        count = m.get("queries", m.get("pairs"))
        rows.setdefault(m["category"], {"count": count})[m["name"]] = m["value"]
    table = Table(title=f"{protocol} by category")
    for column in ("category", "queries" if "queries" in metrics[0] else "pairs", *names):
        table.add_column(column, justify="left" if column == "category" else "right")
    for category, row in list(rows.items())[:shown]:
        table.add_row(category, str(row["count"]), *(_number(row.get(name)) for name in names))
    console.print(table)
    if len(rows) > shown:
        console.print(f"... and {len(rows) - shown} more categories in metrics.json")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
